"""``rlhf-dist ppo`` (and DPO on Ray): every model path of the job, and the frozen reward
model's head, checked on the driver before Ray starts -- one line naming the key, exit 2, in
seconds (no worker ran)."""

import subprocess
import sys
import time

import pytest

from jobs import CONFIGS, REPO, job_env

pytestmark = pytest.mark.slow  # a CLI process per case


def _ppo(tmp_path, *overrides):
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlhf_dist.cli",
            "ppo",
            "-c",
            str(CONFIGS / "ppo.yaml"),
            f"output_dir={tmp_path / 'out'}",
            "logging.backend=none",
            *overrides,
        ],
        cwd=REPO,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.monotonic() - started


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A causal LM on disk (no reward head)."""
    import torch

    from rlhf_dist.config import ModelConfig
    from rlhf_dist.models import load_causal_lm, load_tokenizer, save_model

    section = ModelConfig()
    tokenizer = load_tokenizer(section)
    torch.manual_seed(0)
    return save_model(
        load_causal_lm(section, tokenizer), tokenizer, tmp_path_factory.mktemp("lm") / "model"
    )


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "reward_model.name_or_path",
            "/nonexistent/rm",
            "reward_model.name_or_path: '/nonexistent/rm' does not exist",
        ),
        (
            "critic_model.name_or_path",
            "/nonexistent/critic",
            "critic_model.name_or_path: '/nonexistent/critic' does not exist",
        ),
        (
            "ref_model.name_or_path",
            "/nonexistent/ref",
            "ref_model.name_or_path: '/nonexistent/ref' does not exist",
        ),
        ("reward_model.name_or_path", "LM", "has no reward head (found LlamaForCausalLM)"),
        ("reward_model.name_or_path", "EMPTY", "is not a model directory (no config.json)"),
    ],
)
def test_bad_model_paths_fail_before_ray_starts(tmp_path, lm_dir, key, value, message):
    if value == "EMPTY":
        (tmp_path / "empty").mkdir()
    value = {"LM": str(lm_dir), "EMPTY": str(tmp_path / "empty")}.get(value, value)
    proc, seconds = _ppo(tmp_path, f"{key}={value}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr[-3000:]  # and no warning
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout
    assert seconds < 60


def test_dpo_on_ray_checks_the_reference_path_before_ray_starts(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlhf_dist.cli",
            "dpo",
            "-c",
            str(CONFIGS / "dpo_ray.yaml"),
            f"output_dir={tmp_path / 'out'}",
            "logging.backend=none",
            "ref_model.name_or_path=/nonexistent/ref",
        ],
        cwd=REPO,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith("model error: ref_model.name_or_path: '/nonexistent/ref' does not exist")
    )
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout

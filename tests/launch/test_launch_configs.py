"""The launch kit's configs and hostfile: every YAML under configs/ loads and resolves for the
data-parallel size it is written for (a ``# dp: N [M …]`` header line, or ``DP_SIZES`` for the
tiny configs), configs with a rollout (PPO, GRPO, agents, online DPO)
pass ``cfg.ppo_sizes``'s checks instead of the train-loop sizes and use the GPUs their ``# gpus: N``
header promises; the hostfile example parses (ours and DeepSpeed's parser)."""

from __future__ import annotations

import re
import subprocess

import pytest

from launch_helpers import (
    CONFIGS,
    EXAMPLES,
    REPO,
    has_rollout,
    header_value,
    intended_dp,
    is_ray_mode,
    write,
)
from rlhf_dist.config import load_config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_config_loads_and_resolves_for_its_dp_size(path):
    for dp in intended_dp(path):
        cfg = load_config(str(path))
        if is_ray_mode(path, cfg):
            assert cfg.resources.actor.world_size == dp, "dp header != actor ranks"
        if has_rollout(path):  # PPO / GRPO / online DPO: sized by the rollout, not train.*
            assert cfg.ppo_sizes.sequences > 0
            continue
        cfg.resolve(dp)
        accum = cfg.train.gradient_accumulation_steps
        assert cfg.train.micro_batch_size * accum * dp == cfg.train.train_batch_size


def test_the_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {
        "llama7b_sft_8gpu_zero3.yaml",
        "llama7b_rm_8gpu_zero3.yaml",
        "llama7b_dpo_8gpu_zero3.yaml",
        "qwen2.5_0.5b_dpo_1gpu.yaml",
        "llama7b_ppo_16gpu.yaml",
        "ppo_2node_colocated.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_header_says_command_and_hardware(path):
    lines = path.read_text().splitlines()
    head = []
    for line in lines:
        if not line.startswith("#"):
            break
        head.append(line)
    text = "\n".join(head)
    assert head, f"{path.name} must start with a comment"
    assert re.search(r"Hardware:", text), f"{path.name}: say on what hardware it runs"
    assert re.search(r"(launch/\S+\.sh|rlhf-dist) \S+ .*" + re.escape(path.name), text), (
        f"{path.name}: say which command runs it"
    )
    assert header_value(path, "dp"), f"{path.name}: add a '# dp: N' line"


def test_7b_sft_example_is_the_documented_recipe():
    cfg = load_config(str(REPO / "configs/examples/llama7b_sft_8gpu_zero3.yaml")).resolve(8)
    assert (cfg.deepspeed.zero_stage, cfg.deepspeed.bf16, cfg.model.dtype) == (3, True, "bfloat16")
    assert (
        cfg.train.train_batch_size,
        cfg.train.micro_batch_size,
        cfg.train.gradient_accumulation_steps,
    ) == (128, 4, 4)
    assert cfg.data.max_length == 2048 and cfg.model.gradient_checkpointing
    dpo = load_config(str(REPO / "configs/examples/llama7b_dpo_8gpu_zero3.yaml"))
    assert dpo.dpo.ref_offload and dpo.deepspeed.zero_stage == 3


@pytest.mark.parametrize("path", [p for p in EXAMPLES if "ppo" in p.name], ids=lambda p: p.name)
def test_ppo_example_uses_the_gpus_it_promises(path):
    cfg = load_config(str(path))
    res = cfg.resources
    devices = res.actor.world_size
    if not res.colocate_actor_ref:
        devices += res.reference.world_size
    if cfg.ppo.needs_critic:
        devices += res.critic.world_size
    if cfg.ppo.use_reward_model and not (res.colocate_critic_reward and cfg.ppo.needs_critic):
        devices += res.reward.world_size
    assert header_value(path, "gpus") == [devices]
    if res.colocate_actor_ref:
        assert res.reference.world_size == res.actor.world_size
    if res.colocate_critic_reward:
        assert res.reward.world_size == res.critic.world_size


# --------------------------------------------------------------------------- hostfile


HOST_LINE = re.compile(r"^(\S+)\s+slots=(\d+)\s*$")


def test_hostfile_example_parses():
    text = (REPO / "hostfile.example").read_text()
    hosts = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = HOST_LINE.match(line)
            assert match, f"not 'host slots=N': {line!r}"
            hosts.append((match.group(1), int(match.group(2))))
    assert len(hosts) >= 2 and all(n > 0 for _, n in hosts)
    assert len({h for h, _ in hosts}) == len(hosts)
    assert text.lstrip().startswith("#"), "the example explains itself in comments"
    from deepspeed.launcher.runner import _parse_hostfile

    assert list(_parse_hostfile(text.splitlines(keepends=True)).items()) == hosts


def test_scripts_read_hostfiles_like_deepspeed(tmp_path):
    good = write(tmp_path / "good", "# c\n\nn1 slots=4  # a comment\n  n2 slots=2\n")
    cmd = 'source launch/lib.sh; read_hostfile "$1"; echo "${HOSTS[*]}|${SLOTS[*]}"'
    out = subprocess.run(
        ["bash", "-c", cmd, "x", str(good)], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "n1 n2|4 2"
    for bad, says in [
        ("n1 slot=4\n", "expected 'host slots=N'"),
        ("n1 slots=1\nn1 slots=2\n", "listed twice"),
        ("# only comments\n", "lists no host"),
    ]:
        proc = subprocess.run(
            ["bash", "-c", cmd, "x", str(write(tmp_path / "bad", bad))],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2 and says in proc.stderr, (bad, proc.stderr)

"""Helpers of the Ray-system tests: run CLI jobs in clean subprocesses, read what they wrote,
checksum model files, and a private simulated 2-node Ray cluster.

Every job is its own process (``python -m rlhf_dist.cli …``), joined to the session's shared
Ray instance (``jobs.shared_ray_address``) or, given variables of its own (or ``PRIVATE_RAY``),
starting a private one (the code calls ``ray.init(address="local")``); W&B off, no launcher
variables leaking in from the test process.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, Optional

import psutil

if TYPE_CHECKING:  # pragma: no cover
    import ray
    import torch

from jobs import (
    CONFIGS,
    PRIVATE_RAY,
    REPO,
    SHARED_RAY_AUTH,
    Run,
    finish,
    free_port,
    read_metrics,  # noqa: F401
    run,
    start,
)

QUIET = ("logging.backend=none", "logging.progress_bar=false")

# The PPO runs of test_ray_ppo.py / test_ray_faults.py (tuning: see test_ray_ppo.py).
ITERATIONS = 20
RESUME_AT = 10  # the GAE run saves here; resumed / recovered runs replay from it
COMMON = (
    "train.lr=2e-4",
    "rollout.max_new_tokens=24",
    "ppo.kl_coef=0.1",
    "ppo.mini_batch_size=16",
    f"ppo.iterations={ITERATIONS}",
)
GAE = (
    *COMMON,
    "rollout.rollout_batch_size=32",
    "deepspeed.role_zero_stage={critic: 2}",
    f"checkpoint.save_every={RESUME_AT}",
)
RESUMED_KEYS = (
    "reward/score_mean",
    "kl/ref_kl",
    "actor/policy_loss",
    "actor/approx_kl",
    "critic/value_loss",
    "critic/explained_var",
)


def models(toy) -> tuple:
    return (f"model.name_or_path={toy.sft}", f"reward_model.name_or_path={toy.rm}")


def cli(
    job: str,
    config: str,
    out: Path,
    *overrides: str,
    timeout: float = 400,
    env: Optional[Dict[str, str]] = None,
) -> Run:
    """``python -m rlhf_dist.cli JOB -c configs/tiny/CONFIG.yaml output_dir=OUT …``."""
    return run(
        [
            sys.executable,
            "-m",
            "rlhf_dist.cli",
            job,
            "-c",
            CONFIGS / f"{config}.yaml",
            f"output_dir={out}",
            *QUIET,
            *overrides,
        ],
        out,
        timeout,
        env,
        cwd=REPO,
    )


def launcher(
    job: str, config: str, out: Path, *overrides: str, nprocs: int = 2, timeout: float = 400
) -> Run:
    """The same through the DeepSpeed launcher with ``nprocs`` CPU ranks."""
    return run(
        [
            sys.executable,
            "-m",
            "deepspeed.launcher.runner",
            "--num_gpus",
            str(nprocs),
            "--master_port",
            str(free_port()),
            "--module",
            "rlhf_dist.cli",
            job,
            "-c",
            CONFIGS / f"{config}.yaml",
            f"output_dir={out}",
            *QUIET,
            *overrides,
        ],
        out,
        timeout,
        cwd=REPO,
    )


# --------------------------------------------------------------------------- faults


def rows_at(out: Path, step: int, key: str = "reward/score_mean") -> bool:
    try:
        return any(row["step"] == step and key in row for row in read_metrics(out))
    except (FileNotFoundError, ValueError):  # not written yet / a line half-written
        return False


def restarts_logged(out: Path) -> int:
    try:
        return sum("fault/restarts" in row for row in read_metrics(out))
    except (FileNotFoundError, ValueError):
        return 0


def worker_pid(driver: int, actor_class: str) -> int:
    """A Ray actor process of this job (its title is ``ray::<class>...``)."""
    for proc in psutil.Process(driver).children(recursive=True):
        try:
            if f"ray::{actor_class}" in " ".join(proc.cmdline()):
                return proc.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no {actor_class} process under the driver {driver}")


def wait_for(condition, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def run_with(out: Path, args: tuple, act, job: str = "ppo", config: str = "ppo") -> Run:
    """Start ``rlhf-dist JOB -c configs/tiny/CONFIG.yaml``, do ``act(driver_pid)`` while it
    runs, return the finished job (its output is drained by a thread meanwhile)."""
    cmd = [
        sys.executable,
        "-m",
        "rlhf_dist.cli",
        job,
        "-c",
        CONFIGS / f"{config}.yaml",
        f"output_dir={out}",
        *QUIET,
        *args,
    ]
    # a Ray of its own: the test finds the job's workers among its driver's children
    proc, started, result = start(cmd, out, PRIVATE_RAY, cwd=REPO), time.monotonic(), {}
    drain = threading.Thread(target=lambda: result.update(run=finish(proc, out, started, 600)))
    drain.start()
    try:
        act(proc.pid)
    finally:
        drain.join()
    return result["run"]


# --------------------------------------------------------------------------- model files


def load_tensors(model_dir: Path) -> Dict[str, "torch.Tensor"]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def file_checksum(model_dir: Path) -> float:
    """CRC32 of a saved model's tensors (``utils.checksum.state_checksum``, what the workers
    log) straight from ``model.safetensors``."""
    from rlhf_dist.utils.checksum import state_checksum

    return state_checksum(load_tensors(model_dir))


def max_abs_diff(a: Dict[str, "torch.Tensor"], b: Dict[str, "torch.Tensor"]) -> Dict[str, float]:
    assert sorted(a) == sorted(b), f"different tensors: {sorted(set(a) ^ set(b))}"
    return {k: float((a[k].double() - b[k].double()).abs().max()) for k in a}


def save_tiny_model(directory: Path, seed: int = 42) -> Path:
    """The tiny llama of the tiny configs, initialised from ``seed``, with the toy tokenizer,
    saved as a HF model directory (so sharded workers and the test load the same weights)."""
    import torch

    from rlhf_dist.config import ModelConfig
    from rlhf_dist.models import load_causal_lm, load_tokenizer

    section = ModelConfig()  # defaults = the tiny configs' llama (64 hidden, 2 layers, 4 heads)
    tokenizer = load_tokenizer(section)
    torch.manual_seed(seed)
    model = load_causal_lm(section, tokenizer)
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    return directory


# --------------------------------------------------------------------------- 2-node cluster


@contextlib.contextmanager
def two_node_cluster(num_cpus: int = 2) -> Iterator["ray.cluster_utils.Cluster"]:
    """A simulated 2-node Ray cluster (head + one worker node, ``num_cpus`` each) of this
    test only: its own temp dir (so Ray's "current cluster" file of other users is not
    rewritten) and its own GCS / agent ports.  Nothing is connected in this process.  Its
    authentication mode is the one the jobs get (``SHARED_RAY_AUTH``), set explicitly: its
    processes would otherwise inherit this process's, which an in-process ``ray.init`` of an
    earlier test sets to ``token`` (the jobs would then be refused)."""
    from ray.cluster_utils import Cluster

    saved = {key: os.environ.get(key) for key in ("RAY_TMPDIR", "RAY_AUTH_MODE")}
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: socket paths
    os.environ["RAY_AUTH_MODE"] = SHARED_RAY_AUTH
    cluster = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": num_cpus,
                "gcs_server_port": free_port(),
                "include_dashboard": False,
                "dashboard_agent_listen_port": free_port(),
            },
        )
        cluster.add_node(num_cpus=num_cpus)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        if cluster is not None:
            cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

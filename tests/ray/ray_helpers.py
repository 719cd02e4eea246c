"""Helpers of the Ray-system tests: run CLI jobs in clean subprocesses, read what they wrote,
checksum model files, and a private simulated 2-node Ray cluster.

Every job is its own process (``python -m rlhf_dist.cli …``): a private local Ray per PPO /
DPO-on-Ray job (the code calls ``ray.init(address="local")``), W&B off, no launcher variables
leaking in from the test process.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "tiny"
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT", "RAY_ADDRESS")
QUIET = ("logging.backend=none", "logging.progress_bar=false")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "RAY_USAGE_STATS_ENABLED": "0"})
    env.update(extra)
    return env


@dataclass
class Run:
    """A finished job: exit code, console output, output directory, wall seconds."""

    returncode: int
    log: str
    out: Path
    seconds: float

    def check(self) -> "Run":
        assert self.returncode == 0, f"job failed ({self.returncode}):\n{self.log[-8000:]}"
        return self

    @property
    def metrics(self) -> List[dict]:
        from rlhf_dist.utils.tracking import read_metrics

        return read_metrics(self.out)

    def series(self, key: str) -> List[float]:
        """``key`` of every row that has it, in logged order."""
        return [row[key] for row in self.metrics if key in row]

    def by_step(self, key: str) -> Dict[int, float]:
        return {row["step"]: row[key] for row in self.metrics if key in row}

    def last(self, key: str) -> float:
        return self.series(key)[-1]


def run(cmd: Sequence[str], out: Path, timeout: float = 400,
        env: Optional[Dict[str, str]] = None) -> Run:
    """Run ``cmd`` in its own process group; on timeout the whole group is killed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen(list(map(str, cmd)), cwd=REPO, env=env or job_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        log += f"\n[test] killed after {timeout:.0f}s"
    return Run(proc.returncode, log, out, time.monotonic() - started)


def cli(job: str, config: str, out: Path, *overrides: str, timeout: float = 400,
        env: Optional[Dict[str, str]] = None) -> Run:
    """``python -m rlhf_dist.cli JOB -c configs/tiny/CONFIG.yaml output_dir=OUT …``."""
    return run([sys.executable, "-m", "rlhf_dist.cli", job, "-c", CONFIGS / f"{config}.yaml",
                f"output_dir={out}", *QUIET, *overrides], out, timeout, env)


def launcher(job: str, config: str, out: Path, *overrides: str, nprocs: int = 2,
             timeout: float = 400) -> Run:
    """The same through the DeepSpeed launcher with ``nprocs`` CPU ranks."""
    return run([sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nprocs),
                "--master_port", str(free_port()), "--module", "rlhf_dist.cli", job,
                "-c", CONFIGS / f"{config}.yaml", f"output_dir={out}", *QUIET, *overrides],
               out, timeout)


# --------------------------------------------------------------------------- model files


def load_tensors(model_dir: Path) -> Dict[str, "torch.Tensor"]:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def file_checksum(model_dir: Path) -> float:
    """CRC32 of a saved model's tensors, computed like the workers' ``state_checksum``
    (raw bytes, sorted names) but straight from ``model.safetensors``."""
    import torch

    tensors, crc = load_tensors(model_dir), 0
    for name in sorted(tensors):
        crc = zlib.crc32(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    return float(crc)


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
    rewritten) and its own GCS / agent ports.  Nothing is connected in this process."""
    from ray.cluster_utils import Cluster

    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: socket paths
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": num_cpus, "gcs_server_port": free_port(), "include_dashboard": False,
            "dashboard_agent_listen_port": free_port()})
        cluster.add_node(num_cpus=num_cpus)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        if cluster is not None:
            cluster.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved

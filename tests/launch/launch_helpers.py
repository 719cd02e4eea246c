"""Shared by the launch-kit tests (tests/launch/): the repository's configs and scripts, and
running the scripts with a clean environment (imported by name; see test_launch_*.py)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

from rlhf_dist.config import load_config

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
SCRIPTS = ["local.sh", "multinode.sh", "ray_cluster.sh", "ray_submit.sh", "slurm.sbatch"]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
EXAMPLES = sorted((REPO / "configs" / "examples").glob("*.yaml"))
# Intended data-parallel sizes of configs without a "# dp:" header line.
DP_SIZES = {"tiny/sft.yaml": [1, 2], "tiny/rm.yaml": [1, 2], "tiny/dpo.yaml": [1, 2]}
QUICK = ["train.max_steps=4", "logging.backend=none", "checkpoint.export_hf=false"]


def header_value(path: Path, key: str) -> Optional[List[int]]:
    """Integers of a ``# key: 1 2`` line in the leading comment block, or None."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        match = re.match(rf"#\s*{key}:\s*([\d\s]+)$", line)
        if match:
            return [int(x) for x in match.group(1).split()]
    return None


def has_rollout(path: Path) -> bool:
    """A job that samples (PPO, GRPO, agents, online DPO): a top-level ``rollout:`` section."""
    return re.search(r"^rollout:", path.read_text(), re.MULTILINE) is not None


def is_ray_mode(path: Path, cfg) -> bool:
    return has_rollout(path) or cfg.dpo.mode == "ray"


def intended_dp(path: Path) -> List[int]:
    dp = header_value(path, "dp")
    if dp is not None:
        return dp
    rel = path.relative_to(REPO / "configs").as_posix()
    if rel in DP_SIZES:
        return DP_SIZES[rel]
    cfg = load_config(str(path))
    # a tiny Ray-mode config added later: the trained model lives on the actor group
    return [cfg.resources.actor.world_size] if is_ray_mode(path, cfg) else [1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def script_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "WANDB_MODE": "offline",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    for key in (
        "DRY_RUN",
        "NODE_RANK",
        "MASTER_ADDR",
        "DS_ARGS",
        "RAY_ADDRESS",
        "SLURM_JOB_NODELIST",
        "RAY_SUBMIT_ARGS",
        "RAY_START_ARGS",
    ):
        env.pop(key, None)
    env.update(extra)
    return env


def sh(
    script: str, *args: str, timeout: float = 60, cwd: Path = REPO, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(LAUNCH / script), *args],
        cwd=cwd,
        env=script_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def dry(script: str, *args: str, **env: str) -> List[str]:
    """The commands a script would run (``DRY_RUN=1``), one string per command."""
    proc = sh(script, *args, DRY_RUN="1", **env)
    assert proc.returncode == 0, proc.stderr
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def metrics(out: Path) -> List[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def train_losses(out: Path) -> Dict[int, float]:
    return {row["step"]: row["train/loss"] for row in metrics(out) if "train/loss" in row}

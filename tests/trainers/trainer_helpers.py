"""Helpers for the launcher-trainer tests: start real jobs (deepspeed launcher, CLI), read what
they wrote (metrics.jsonl, checkpoints, the offline W&B run file).

Jobs run in subprocesses with a clean environment: no launcher variables leak in from the test
process, W&B is offline, one OpenMP thread per rank (2 ranks on a 2-core machine).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "tiny"
LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT", "CROSS_RANK", "CROSS_SIZE", "LOCAL_SIZE", "GROUP_RANK",
                 "ROLE_RANK", "TORCHELASTIC_RUN_ID")
QUIET = ("logging.progress_bar=false",)

# The shared 2-rank runs (conftest.launcher_run): each job as its tiny config has it, shortened
# where the signal is already clear: SFT/RM one epoch (14 steps of 16), DPO the config's two
# epochs (28 steps).
JOB_OVERRIDES = {
    "sft": ("train.epochs=1", "train.eval_every=7"),
    "rm": ("train.epochs=1", "train.eval_every=7"),
    "dpo": ("train.eval_every=14",),
}
WANDB_RUN = ("sft", 3)  # the one run that logs to (offline) W&B; the others use backend none


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env.update(extra)
    return env


@dataclass
class Run:
    """A finished job: exit code, its console output, its output directory, wall seconds."""

    returncode: int
    log: str
    out: Path
    seconds: float

    def check(self) -> "Run":
        assert self.returncode == 0, f"job failed ({self.returncode}):\n{self.log[-6000:]}"
        return self

    @property
    def metrics(self) -> List[dict]:
        return read_metrics(self.out)


def start(cmd: Sequence[str], out: Path, env: Dict[str, str]) -> subprocess.Popen:
    """Start a job in its own process group (so a timeout can stop the ranks it spawned)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(list(map(str, cmd)), cwd=out.parent, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def finish(proc: subprocess.Popen, out: Path, started: float, timeout: float) -> Run:
    """Wait for a job from :func:`start`; on timeout kill its process group and say so."""
    try:
        log, _ = proc.communicate(timeout=max(timeout - (time.monotonic() - started), 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        log += f"\n[test] killed after {timeout:.0f}s (a stale torch_extensions lock hangs " \
               f"DeepSpeed's JIT op load forever: look for FileBaton.wait)"
    return Run(proc.returncode, log, out, time.monotonic() - started)


def _run(cmd: Sequence[str], out: Path, env: Dict[str, str], timeout: float) -> Run:
    started = time.monotonic()
    return finish(start(cmd, out, env), out, started, timeout)


def cli_args(job: str, out: Path, overrides: Sequence[str]) -> List[str]:
    return [job, "-c", str(CONFIGS / f"{job}.yaml"), f"output_dir={out}", *QUIET, *overrides]


def launch(job: str, out: Path, *overrides: str, nprocs: int = 2, timeout: float = 300,
           env: Dict[str, str] = None) -> Run:
    """``python -m deepspeed.launcher.runner --num_gpus N --module rlhf_dist.cli JOB …`` (on a
    CPU the launcher starts N CPU ranks).  Retried once if the picked port was taken."""
    for attempt in range(2):
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nprocs),
               "--master_port", str(free_port()), "--module", "rlhf_dist.cli",
               *cli_args(job, out, overrides)]
        run = _run(cmd, out, env or job_env(), timeout)
        if run.returncode == 0 or "address already in use" not in run.log.lower() or attempt:
            return run
    return run


def cli(job: str, out: Path, *overrides: str, timeout: float = 300,
        env: Dict[str, str] = None) -> Run:
    """One process, no launcher: ``python -m rlhf_dist.cli JOB …``."""
    return _run([sys.executable, "-m", "rlhf_dist.cli", *cli_args(job, out, overrides)], out,
                env or job_env(), timeout)


# --------------------------------------------------------------------------- reading


def read_metrics(out: Path) -> List[dict]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(rows: List[dict], key: str) -> Dict[int, float]:
    """``{step: value}`` of one metric (rows without it skipped)."""
    return {row["step"]: row[key] for row in rows if key in row}


def last(rows: List[dict], key: str) -> float:
    values = series(rows, key)
    return values[max(values)]


def trainer_state(out: Path) -> dict:
    """The ``trainer_state.json`` of the newest checkpoint of a run."""
    newest = sorted((Path(out) / "checkpoints").glob("step_*"))[-1]
    return json.loads((newest / "trainer_state.json").read_text())


# ------------------------------------------------------------- offline W&B run file
# wandb 0.31 writes no summary json offline; the run is in ``run-<id>.wandb``: a LevelDB-style
# log (7-byte header, 32 KiB blocks of chunks ``crc32c:u32 | length:u16 | type:u8`` + payload;
# types 1 full, 2/3/4 first/middle/last) of serialized ``wandb_internal_pb2.Record`` messages.

_BLOCK, _HEADER = 32 * 1024, 7


def _payloads(data: bytes):
    assert data[:4] == b":W&B", f"not a .wandb file: {data[:_HEADER]!r}"
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (1, 4):
            yield pending
            pending = b""


def read_wandb_offline(run_dir: Path) -> dict:
    """``{"config", "history" (rows), "summary", "project", "job_type", "exit" (the exit
    record is written: the run file is complete)}`` of an offline run directory."""
    from wandb.proto import wandb_internal_pb2 as pb

    def items(entries):
        return {(e.key or "/".join(e.nested_key)): json.loads(e.value_json) for e in entries}

    out = {"config": {}, "history": [], "summary": {}, "exit": False}
    for path in Path(run_dir).glob("run-*.wandb"):
        for payload in _payloads(path.read_bytes()):
            record = pb.Record()
            record.ParseFromString(payload)
            kind = record.WhichOneof("record_type")
            if kind == "history":
                out["history"].append(items(record.history.item))
            elif kind == "summary":
                out["summary"].update(items(record.summary.update))
            elif kind == "run":  # the run's config and names
                out["config"].update(items(record.run.config.update))
                out["project"], out["job_type"] = record.run.project, record.run.job_type
            elif kind == "config":
                out["config"].update(items(record.config.update))
            elif kind == "exit":
                out["exit"] = True
    return out

"""Helpers for the launcher-trainer tests: start real jobs (deepspeed launcher, CLI), read what
they wrote (metrics.jsonl, checkpoints, the offline W&B run file).

Jobs run in subprocesses with a clean environment: no launcher variables leak in from the test
process, W&B is offline, one OpenMP thread per rank (2 ranks on a 2-core machine).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Dict, List, Sequence

from jobs import (
    CONFIGS,
    REPO,  # noqa: F401 (re-exported)
    Run,
    finish,  # noqa: F401
    free_port,
    job_env,  # noqa: F401
    read_metrics,  # noqa: F401
    run,
    start,  # noqa: F401
)

QUIET = ("logging.progress_bar=false",)

# The shared 2-rank runs (conftest.launcher_run): each job as its tiny config has it, shortened
# where the signal is already clear: SFT/RM one epoch (14 steps of 16), DPO the config's two
# epochs (28 steps).
JOB_OVERRIDES = {
    "sft": ("train.epochs=1", "train.eval_every=7"),
    "rm": ("train.epochs=1", "train.eval_every=7"),
    "dpo": ("train.eval_every=14",),
}
BF16 = ("deepspeed.bf16=true", "model.dtype=bfloat16")
WANDB_RUN = ("sft", 3)  # the one run that logs to (offline) W&B; the others use backend none


def cli_args(job: str, out: Path, overrides: Sequence[str]) -> List[str]:
    return [job, "-c", str(CONFIGS / f"{job}.yaml"), f"output_dir={out}", *QUIET, *overrides]


def launch(
    job: str,
    out: Path,
    *overrides: str,
    nprocs: int = 2,
    timeout: float = 300,
    env: Dict[str, str] = None,
    port: int = None,
) -> Run:
    """``python -m deepspeed.launcher.runner --num_gpus N --module rlhf_dist.cli JOB …`` (on a
    CPU the launcher starts N CPU ranks).  Retried once if the picked port was taken."""
    for attempt in range(2):
        master_port = port or free_port()
        cmd = [
            sys.executable,
            "-m",
            "deepspeed.launcher.runner",
            "--num_gpus",
            str(nprocs),
            "--master_port",
            str(master_port),
            "--module",
            "rlhf_dist.cli",
            *cli_args(job, out, overrides),
        ]
        done = run(cmd, out, timeout, env)
        done.port = master_port
        if done.returncode == 0 or "address already in use" not in done.log.lower() or attempt:
            return done
    return done


def cli(
    job: str, out: Path, *overrides: str, timeout: float = 300, env: Dict[str, str] = None
) -> Run:
    """One process, no launcher: ``python -m rlhf_dist.cli JOB …``."""
    return run(
        [sys.executable, "-m", "rlhf_dist.cli", *cli_args(job, out, overrides)], out, timeout, env
    )


def fit_in_process(trainer_cls, job: str, out: Path, *overrides: str):
    """Fit a 1-rank job of ``configs/tiny/JOB.yaml`` inside the test process (real DeepSpeed
    engines, the trained objects at hand); the process environment is restored afterwards."""
    import os

    from rlhf_dist.config import load_config

    saved = dict(os.environ)
    os.environ.update(
        {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
        }
    )
    try:
        cfg = load_config(
            str(CONFIGS / f"{job}.yaml"),
            [f"output_dir={out}", "logging.backend=none", *QUIET, *overrides],
        )
        trainer = trainer_cls(cfg)
        trainer.fit()
        return trainer
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --------------------------------------------------------------------------- reading


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
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + _HEADER : pos + _HEADER + length]
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

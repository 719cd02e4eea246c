"""Preemption of a launcher job: SIGTERM to one rank of a 2-rank DPO run (the other rank never
sees the signal) -- both ranks finish the step, write a checkpoint, exit 75; the next start with
``checkpoint.resume=auto`` goes on and ends exactly where the uninterrupted run (the shared
``launcher_run("dpo", 2)``) ends: same losses per step, same exported weights."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter

import psutil
import pytest

from trainer_helpers import (
    BF16,
    JOB_OVERRIDES,
    cli_args,
    finish,
    free_port,
    launch,
    read_metrics,
    series,
    start,
)

pytestmark = pytest.mark.slow

PREEMPTED_EXIT = 75
# bf16, as launcher_run's ZeRO-2 runs: the exact resume holds in bf16 too
ARGS = ("deepspeed.zero_stage=2", "logging.backend=none", *JOB_OVERRIDES["dpo"], *BF16)


def rank_pid(launcher: int, rank: int) -> int:
    for proc in psutil.Process(launcher).children(recursive=True):
        try:
            if f"--local_rank={rank}" in proc.cmdline():
                return proc.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no rank {rank} under the launcher {launcher}")


def logged_step(out, step: int) -> bool:
    try:
        return any(row["step"] >= step for row in read_metrics(out))
    except (FileNotFoundError, ValueError):
        return False


@pytest.fixture(scope="module")
def preempted(tmp_path_factory):
    out = tmp_path_factory.mktemp("preempt") / "dpo"
    cmd = [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        "2",
        "--master_port",
        str(free_port()),
        "--module",
        "rlhf_dist.cli",
        *cli_args("dpo", out, ARGS),
    ]
    proc, started, result = start(cmd, out), time.monotonic(), {}
    drain = threading.Thread(target=lambda: result.update(run=finish(proc, out, started, 300)))
    drain.start()
    deadline = time.monotonic() + 240
    while not logged_step(out, 5):
        assert time.monotonic() < deadline and proc.poll() is None, "no step 5"
        time.sleep(0.2)
    psutil.Process(rank_pid(proc.pid, 1)).send_signal(signal.SIGTERM)
    drain.join()
    stopped_at = max(series(read_metrics(out), "train/loss"))  # before the next start adds rows
    again = launch("dpo", out, *ARGS, "checkpoint.resume=auto").check()
    return result["run"], stopped_at, again


def test_sigterm_to_one_rank_checkpoints_and_resume_ends_like_the_uninterrupted_run(
    preempted, launcher_run
):
    from safetensors.torch import load_file

    stopped, stopped_at, again = preempted
    full = launcher_run("dpo", 2)
    assert stopped.returncode == PREEMPTED_EXIT, stopped.log[-3000:]
    assert "received SIGTERM" in stopped.log
    assert 5 <= stopped_at < max(series(full.metrics, "train/loss"))
    assert (again.out / "checkpoints" / f"step_{stopped_at:06d}" / "COMPLETE").is_file()
    losses, want = series(again.metrics, "train/loss"), series(full.metrics, "train/loss")
    assert sorted(losses) == sorted(want)  # one history: each step once, none missing
    for step in want:
        assert losses[step] == pytest.approx(want[step], abs=1e-5), step
    counts = Counter((k, row["step"]) for row in again.metrics for k in row if k != "step")
    assert [k for k, n in counts.items() if n > 1] == []
    a = load_file(str(again.out / "model" / "model.safetensors"))
    b = load_file(str(full.out / "model" / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6

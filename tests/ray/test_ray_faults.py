"""Faults on a real Ray PPO run, from the GAE run's iteration-10 checkpoint (test_ray_ppo.py):
``checkpoint.resume=auto`` to iteration 13 with ``resources.max_restarts=2``; the critic
worker is SIGKILLed in iteration 12, then an actor rank: the driver rebuilds every group from
the checkpoint twice by itself; then SIGTERM to the driver: it finishes the iteration, writes
a checkpoint, exits 75; the next start (``checkpoint.resume=auto`` again: the plain exact
resume) finishes the run -- with the uninterrupted GAE run's metrics for iterations 11..13,
and a ``metrics.jsonl`` holding every (metric, step) once, whatever was redone.  These starts
hold the reference in the actor's processes (``resources.reference_in_actor``; the GAE run has a
reference group): one group fewer to rebuild at each start, and the same numbers.
(A separate fault-free resume run, which also compared final weights, was dropped for CI
time: every logged loss, reward and KL of iterations 11..13 equal to 1e-5 is the check.)
"""

from __future__ import annotations

import shutil
import signal
from collections import Counter
from pathlib import Path

import psutil
import pytest

from ray_helpers import (
    GAE,
    RESUME_AT,
    RESUMED_KEYS,
    cli,
    models,
    restarts_logged,
    rows_at,
    run_with,
    wait_for,
    worker_pid,
)

pytestmark = pytest.mark.slow

END = RESUME_AT + 3
PREEMPTED_EXIT = 75


def from_checkpoint(gae_run, out: Path) -> Path:
    name = f"step_{RESUME_AT:06d}"
    shutil.copytree(gae_run.out / "checkpoints" / name, out / "checkpoints" / name)
    return out


def overrides(toy_models, *extra: str) -> tuple:
    return (
        *models(toy_models),
        *GAE,
        f"ppo.iterations={END}",
        "checkpoint.resume=auto",
        "resources.reference_in_actor=true",
        *extra,
    )


@pytest.fixture(scope="module")
def faulted(gae_run, toy_models, tmp_path_factory):
    """One run through every fault (one run, not three: each start costs half a minute):
    critic SIGKILLed in iteration 12, recovered; an actor rank SIGKILLed in iteration 12 again,
    recovered; SIGTERM to the driver in iteration 12 once more: checkpoint, exit 75.  Then the
    next start (``checkpoint.resume=auto``) finishes the run."""
    out = from_checkpoint(gae_run, tmp_path_factory.mktemp("faults") / "faulted")

    def faults(driver: int) -> None:
        for restarts, victim in enumerate(("CriticWorker", "ActorWorker")):
            wait_for(lambda: restarts_logged(out) == restarts, f"restart {restarts}")
            wait_for(lambda: rows_at(out, RESUME_AT + 1), "iteration 11")
            psutil.Process(worker_pid(driver, victim)).send_signal(signal.SIGKILL)
        wait_for(lambda: restarts_logged(out) == 2, "restart 2")
        wait_for(lambda: rows_at(out, RESUME_AT + 1), "iteration 11")
        psutil.Process(driver).send_signal(signal.SIGTERM)

    stopped = run_with(
        out, overrides(toy_models, "resources.max_restarts=2", "resources.timeout_s=120"), faults
    )
    stopped_rows = stopped.metrics  # before the next start rewinds and adds rows
    again = cli("ppo", "ppo", out, *overrides(toy_models)).check()
    return stopped, stopped_rows, again


def assert_same_iterations(run, want, steps) -> None:
    for key in RESUMED_KEYS:
        got, expected = run.by_step(key), want.by_step(key)
        for step in steps:
            assert got[step] == pytest.approx(expected[step], abs=1e-5), (key, step)


def assert_one_row_per_step(run) -> None:
    """Each metric once per step (``fault/*`` rows are per restart: two at the checkpoint's
    step when two faults went back to it)."""
    counts = Counter(
        (key, row["step"])
        for row in run.metrics
        for key in row
        if key != "step" and not key.startswith("fault/")
    )
    assert [k for k, n in counts.items() if n > 1] == []


def test_lost_workers_are_recovered_by_themselves(faulted):
    stopped, rows, _ = faulted
    faults = [row for row in rows if "fault/restarts" in row]
    assert [row["fault/restarts"] for row in faults] == [1.0, 2.0]
    assert all(row["step"] == RESUME_AT for row in faults)  # both went back to the checkpoint
    assert all(row["fault/steps_lost"] >= 1 and row["fault/recovery_s"] > 0 for row in faults)
    assert "critic rank 0 died" in stopped.log and "restart 2 of 2" in stopped.log
    assert "actor rank" in stopped.log.split("restart 1 of 2")[1]
    # the actor held the reference: no reference group at any start
    assert stopped.series("placement/actor_nodes") and not stopped.series(
        "placement/reference_nodes"
    )


def test_sigterm_checkpoints_exits_75_and_the_next_start_goes_on(faulted):
    stopped, rows, again = faulted
    assert stopped.returncode == PREEMPTED_EXIT, stopped.log[-3000:]
    assert "received SIGTERM" in stopped.log and "checkpoint.resume=auto" in stopped.log
    stopped_at = max(row["step"] for row in rows if "reward/score_mean" in row)
    assert RESUME_AT + 1 <= stopped_at < END
    assert (again.out / "checkpoints" / f"step_{stopped_at:06d}" / "COMPLETE").is_file()


def test_faulted_run_ends_with_the_uninterrupted_results(gae_run, faulted):
    _, _, again = faulted
    assert sorted(again.by_step("reward/score_mean")) == list(range(RESUME_AT + 1, END + 1))
    assert_same_iterations(again, gae_run, range(RESUME_AT + 1, END + 1))
    assert_one_row_per_step(again)
    assert (again.out / "model" / "config.json").is_file()  # the export after the resume

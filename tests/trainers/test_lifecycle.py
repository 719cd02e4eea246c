"""The run lifecycle with a job of plain Python (a counter that "trains" by adding its step's
number): the schedule, checkpoints and resume, one metrics history, a real SIGTERM, non-finite
steps -- every path of trainers/lifecycle.py without DeepSpeed or Ray in the way (those are the
jobs' own tests: tests/ray/test_ray_faults.py, test_trainers_preempt.py)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from rlhf_dist.algo import NonFiniteError
from rlhf_dist.config import load_config
from rlhf_dist.trainers.lifecycle import Job, Preempted
from rlhf_dist.utils import read_metrics


class Lost(Exception):
    """A recoverable fault (what WorkerLost is to the Ray jobs)."""


class CounterJob(Job):
    """``total`` accumulates 1 + 2 + ... + step; its state is one JSON file.  ``lost_in``:
    the places ("step 5", "export") where a recoverable fault happens, once each."""

    job = "counter"
    recoverable = (Lost,)

    def __init__(self, cfg, bad_steps=(), term_at=None, skippable=True, lost_in=(), max_restarts=0):
        self.cfg, self.total_steps = cfg, 6
        self.bad_steps, self.term_at, self.skippable = set(bad_steps), term_at, skippable
        self.lost_in, self.max_restarts = set(lost_in), max_restarts
        self.closed, self.builds, self.exports = None, 0, 0

    def lose(self, where):
        if where in self.lost_in:
            self.lost_in.discard(where)
            raise Lost(f"worker lost in {where}")

    def build(self):
        self.total = 0
        self.builds += 1

    def evaluate(self):
        return {"eval/total": float(self.total)}

    def export(self):
        self.lose("export")
        self.exports += 1

    def train_step(self):
        step = self.step + 1
        self.lose(f"step {step}")
        if step in self.bad_steps:
            raise NonFiniteError("non-finite reward in rows [0] of 4", self.skippable)
        if step == self.term_at:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step, like a preemption notice
        self.total += step
        return {"train/total": float(self.total)}

    def save_to(self, staging):
        (staging / "counter.json").write_text(json.dumps({"total": self.total}))
        return {}

    def load_from(self, path, state):
        self.total = json.loads((path / "counter.json").read_text())["total"]

    def close(self, failed):
        self.closed = failed


def config(out, *overrides):
    return load_config(
        None,
        [f"output_dir={out}", "logging.backend=none", "logging.progress_bar=false", *overrides],
    )


def totals(out):
    return {row["step"]: row["train/total"] for row in read_metrics(out) if "train/total" in row}


def test_a_full_run_logs_every_step_and_saves_on_schedule(tmp_path):
    job = CounterJob(config(tmp_path, "checkpoint.save_every=2"))
    assert job.fit() == {"train/total": 21.0}
    assert totals(tmp_path) == {s: s * (s + 1) / 2 for s in range(1, 7)}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_000004",
        "step_000006",
    ]  # keep_last 2 of 2, 4, 6
    assert job.closed is False


def test_sigterm_finishes_the_step_checkpoints_and_resume_goes_on(tmp_path):
    job, before = CounterJob(config(tmp_path), term_at=3), signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match="SIGTERM after checkpointing step 3"):
        job.fit()
    assert job.closed is True
    assert (tmp_path / "checkpoints" / "step_000003" / "COMPLETE").is_file()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is given back
    assert CounterJob(config(tmp_path, "checkpoint.resume=auto")).fit() == {"train/total": 21.0}
    assert totals(tmp_path) == {s: s * (s + 1) / 2 for s in range(1, 7)}


def test_resume_drops_the_rows_a_dead_run_logged_after_the_checkpoint(tmp_path):
    CounterJob(config(tmp_path, "checkpoint.save_every=2")).fit()
    with open(tmp_path / "metrics.jsonl", "a") as f:  # rows of a run that died after step 4
        f.write(json.dumps({"step": 5, "train/total": -1.0}) + "\n")
    ckpts = tmp_path / "checkpoints"  # as if step 6 had never been saved
    os.rename(ckpts / "step_000006", ckpts / "gone-step_000006")
    CounterJob(config(tmp_path, "checkpoint.save_every=2", "checkpoint.resume=auto")).fit()
    steps = [row["step"] for row in read_metrics(tmp_path) if "train/total" in row]
    assert steps == [1, 2, 3, 4, 5, 6]  # 5 and 6 once each: the resumed run's
    assert totals(tmp_path)[6] == 21.0


def test_nonfinite_step_stops_naming_the_step_by_default(tmp_path):
    with pytest.raises(NonFiniteError, match=r"^counter step 3: non-finite reward in rows \[0\]"):
        CounterJob(config(tmp_path), bad_steps={3}).fit()


def test_skip_step_drops_and_counts_the_step(tmp_path):
    job = CounterJob(config(tmp_path, "train.on_nonfinite=skip_step"), bad_steps={2, 5})
    job.fit()
    assert job.total == 21 - 2 - 5
    rows = read_metrics(tmp_path)
    assert [(r["step"], r["fault/skipped_steps"]) for r in rows if "fault/skipped_steps" in r] == [
        (2, 1.0),
        (5, 2.0),
    ]


def test_skip_step_stops_after_max_skipped_steps_in_a_row(tmp_path):
    cfg = config(tmp_path, "train.on_nonfinite=skip_step", "train.max_skipped_steps=2")
    with pytest.raises(
        NonFiniteError,
        match=r"counter step 4: .* 3 steps in a row skipped "
        r"\(train.max_skipped_steps=2\)",
    ):
        CounterJob(cfg, bad_steps={2, 3, 4}).fit()


def test_a_fault_found_after_the_update_began_is_never_skipped(tmp_path):
    cfg = config(tmp_path, "train.on_nonfinite=skip_step")
    with pytest.raises(NonFiniteError, match="counter step 2"):
        CounterJob(cfg, bad_steps={2}, skippable=False).fit()


def test_nonfinite_error_crosses_processes_with_its_kind():
    import pickle

    err = pickle.loads(pickle.dumps(NonFiniteError("non-finite loss", skippable=True)))
    assert isinstance(err, NonFiniteError) and err.skippable and str(err) == "non-finite loss"


def test_a_lost_worker_is_recovered_from_the_last_checkpoint(tmp_path):
    job = CounterJob(
        config(tmp_path, "checkpoint.save_every=2"), lost_in={"step 5"}, max_restarts=1
    )
    assert job.fit() == {"train/total": 21.0} and job.builds == 2
    assert totals(tmp_path) == {s: s * (s + 1) / 2 for s in range(1, 7)}
    steps = [row["step"] for row in read_metrics(tmp_path) if "train/total" in row]
    assert steps == [1, 2, 3, 4, 5, 6]  # step 5 once: the recovered run's
    faults = [row for row in read_metrics(tmp_path) if "fault/restarts" in row]
    assert [(r["step"], r["fault/restarts"], r["fault/steps_lost"]) for r in faults] == [
        (4, 1, 0)
    ]  # back to step 4, lost in step 5 before it counted


def test_a_fault_in_the_export_exports_again_without_redoing_the_rest(tmp_path):
    job = CounterJob(
        config(tmp_path, "checkpoint.save_every=2"), lost_in={"export"}, max_restarts=1
    )
    job.fit()
    assert job.builds == 2 and job.exports == 1
    evals = [
        (row["step"], row["eval/total"]) for row in read_metrics(tmp_path) if "eval/total" in row
    ]
    assert evals == [(6, 21.0)]  # the final eval once; the rebuilt job loaded step 6


def test_faults_beyond_max_restarts_stop_the_run(tmp_path):
    job = CounterJob(
        config(tmp_path, "checkpoint.save_every=2"), lost_in={"step 3", "step 5"}, max_restarts=1
    )
    with pytest.raises(Lost, match="worker lost in step 5"):
        job.fit()
    assert job.builds == 2 and job.closed is True

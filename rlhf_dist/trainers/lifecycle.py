"""One run lifecycle for every job: the launcher loops (SFT, RM, DPO) and the Ray drivers
(PPO/GRPO, DPO on Ray).

    start → resume → (step → log → eval / checkpoint on schedule)* → finish → close

A job (:class:`Job`) supplies its steps; this module owns everything around them, once: the
checkpoint directory and ``checkpoint.resume``, the tracker (one ``metrics.jsonl`` history per
run, see :meth:`Tracker.rewind`) and progress bar, the periodic and final checkpoints, export,
and shutdown on success or failure -- and the fault handling that plugs into them: recovery
from a lost worker (``Job.recoverable``: teardown, build, the last checkpoint), preemption
(SIGTERM / SIGUSR1: checkpoint, :class:`Preempted`, exit 75) and non-finite steps
(``train.on_nonfinite``).  ``trainers/`` holds no process group: a job says how its processes
agree (:class:`Ranks`) -- the launcher's ranks through ``engine.dist``, a Ray driver is one
process (:data:`DRIVER`).
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Type

from rlhf_dist.algo.finite import NonFiniteError
from rlhf_dist.config import Config, save_config, to_dict
from rlhf_dist.trainers.preemption import PREEMPTED_EXIT, Preempted, preemption_signals
from rlhf_dist.utils import CheckpointDir, Tracker, progress

__all__ = ["DRIVER", "Job", "Lifecycle", "PREEMPTED_EXIT", "Preempted", "Ranks"]

log = logging.getLogger(__name__)
Metrics = Dict[str, float]


class Ranks:
    """How the processes of a job agree: ``barrier``, ``broadcast`` (rank 0's object) and
    ``any`` (whether a flag is set on some rank)."""

    def __init__(
        self,
        is_main: bool,
        barrier: Callable[[], None],
        broadcast: Callable[[Any], Any],
        any_rank: Callable[[bool], bool],
    ):
        self.is_main, self.barrier, self.broadcast, self.any = is_main, barrier, broadcast, any_rank


DRIVER = Ranks(True, lambda: None, lambda obj: obj, bool)  # a Ray driver: one process decides


class Job:
    """The steps of one kind of run.  Set ``job`` (tracker job type, bar label), ``cfg``,
    ``ranks``, ``total_steps`` in :meth:`start`; the lifecycle keeps ``step``."""

    job = "base"
    cfg: Config
    ranks: Ranks = DRIVER
    total_steps: int = 0
    step: int = 0
    # faults after which teardown() + build() + the last checkpoint let the run go on
    recoverable: Tuple[Type[BaseException], ...] = ()
    max_restarts: int = 0

    def fit(self) -> Metrics:
        """Run this job from start (or its checkpoint) to the end: :class:`Lifecycle`."""
        return Lifecycle(self).fit()

    def start(self) -> None:
        """Once per process, before anything is resumed: seeds, tokenizer, data, Ray."""

    def build(self) -> None:
        """The models: DeepSpeed engines here, or the Ray worker groups."""
        raise NotImplementedError

    def train_step(self) -> Metrics:
        """One step (launcher: an optimiser step; Ray PPO: an iteration)."""
        raise NotImplementedError

    def evaluate(self) -> Optional[Metrics]:
        """Eval metrics, or None for a job without an eval set."""
        return None

    def start_metrics(self) -> Metrics:
        """Logged once after resume (placement, pre-computation times)."""
        return {}

    def save_to(self, staging: Path) -> Dict[str, Any]:
        """Write the job's state into ``staging`` (every rank); return what the checkpoint's
        ``trainer_state.json`` holds besides the step."""
        raise NotImplementedError

    def load_from(self, path: Path, state: Dict[str, Any]) -> None:
        """Restore what :meth:`save_to` wrote (the lifecycle sets ``step``)."""
        raise NotImplementedError

    def end_metrics(self) -> Metrics:
        """Logged once at the end, before the final checkpoint (frozen-model checksums)."""
        return {}

    def export(self) -> Optional[Metrics]:
        """The trained model(s) in Hugging Face format (``checkpoint.export_hf``); metrics
        to log, if any (an RM's score statistics)."""
        return None

    def teardown(self) -> None:
        """Kill what :meth:`build` made (before a rebuild after a recoverable fault)."""

    def close(self, failed: bool) -> None:
        """Stop workers / process groups; runs after success and after any failure."""


class Lifecycle:
    """Runs a :class:`Job` from start (or its checkpoint) to the end."""

    def __init__(self, job: Job):
        self.job, self.cfg = job, job.cfg
        self.out = Path(self.cfg.output_dir)
        self.tracker: Optional[Tracker] = None

    @property
    def is_main(self) -> bool:
        return self.job.ranks.is_main

    def fit(self) -> Metrics:
        job, failed = self.job, True
        try:  # set-up inside: a failure after workers started still stops them
            job.start()
            with preemption_signals() as signalled:
                self.signalled = signalled
                path, state = self.checkpoint_to_resume(self.cfg.checkpoint.resume)
                if self.is_main:
                    save_config(self.cfg)
                self.tracker = Tracker(
                    self.cfg.logging,
                    str(self.out),
                    to_dict(self.cfg),
                    self.is_main,
                    job.job,
                    resume_step=None if state is None else job.step,
                )
                job.build()
                if path is not None:
                    job.load_from(path, state)
                self.log(job.start_metrics())
                self.run_recovering()
            failed = False
        finally:
            if self.tracker is not None:
                self.tracker.finish(exit_code=int(failed))
            job.close(failed)
        return self.last

    def run_recovering(self) -> None:
        """The training loop and finish; after a recoverable fault (a lost worker) the groups
        are rebuilt from the last checkpoint, at most ``max_restarts`` times."""
        restarts, self.saved_at = 0, time.monotonic()
        self.skipped = self.skipped_in_a_row = 0
        self.last: Metrics = {}
        self.saved_final = False
        while True:
            try:
                self.train()
                return self.finish()
            except self.job.recoverable as fault:
                if restarts >= self.job.max_restarts:
                    raise
                restarts += 1
                self.recover(fault, restarts)

    def train(self) -> None:
        job = self.job
        bar = progress(
            total=job.total_steps,
            desc=job.job,
            enabled=self.is_main and self.cfg.logging.progress_bar,
        )
        bar.update(job.step)
        try:
            while job.step < job.total_steps:
                self.last = self.one_step()
                job.step += 1
                bar.update(1)
                self.after_step(self.last)
        finally:
            bar.close()

    def one_step(self) -> Metrics:
        """``job.train_step()``; a non-finite value names the step, and with
        ``train.on_nonfinite=skip_step`` a step dropped before any update is counted instead
        (``fault/skipped_steps``), at most ``train.max_skipped_steps`` in a row."""
        train = self.cfg.train
        try:
            metrics = self.job.train_step()
        except NonFiniteError as err:
            err = err.prefixed(f"{self.job.job} step {self.job.step + 1}")
            if train.on_nonfinite != "skip_step" or not err.skippable:
                raise err from None
            self.skipped_in_a_row += 1
            self.skipped += 1
            if self.skipped_in_a_row > train.max_skipped_steps:
                raise NonFiniteError(
                    f"{err}; {self.skipped_in_a_row} steps in a row skipped "
                    f"(train.max_skipped_steps={train.max_skipped_steps})"
                ) from None
            log.warning("%s -- step skipped (train.on_nonfinite=skip_step)", err)
            return {"fault/skipped_steps": self.skipped}
        self.skipped_in_a_row = 0
        return metrics

    def recover(self, fault: BaseException, restarts: int) -> None:
        """Kill every group, build them again, load the last complete checkpoint (or start
        over), and log ``fault/*``."""
        failed_at, begin = self.job.step, time.monotonic()
        log.warning(
            "%s: %s -- restart %d of %d (resources.max_restarts): recreating the "
            "groups from the last checkpoint",
            self.job.job,
            fault,
            restarts,
            self.job.max_restarts,
        )
        self.job.teardown()
        self.job.build()
        spec = "auto" if self.ckpt.latest() is not None else self.cfg.checkpoint.resume
        path, state = self.checkpoint_to_resume(spec)
        if path is None:
            self.job.step = 0
        else:
            self.job.load_from(path, state)
        self.tracker.rewind(self.job.step)
        now = time.monotonic()
        self.log(
            {
                "fault/restarts": restarts,
                "fault/steps_lost": failed_at - self.job.step,
                "fault/lost_s": now - self.saved_at,
                "fault/recovery_s": now - begin,
            }
        )
        self.saved_at = now

    # ------------------------------------------------------------------ schedule
    def after_step(self, metrics: Metrics) -> None:
        """Log, evaluate and save on schedule; the last step's eval and save are ``finish``'s."""
        step, train, save_every = self.job.step, self.cfg.train, self.cfg.checkpoint.save_every
        before_end = step < self.job.total_steps
        if step % train.log_every == 0 or not before_end:
            self.log(metrics)
        if before_end and train.eval_every and step % train.eval_every == 0:
            self.log_eval()
        stop = before_end and self.job.ranks.any(self.signalled.signum is not None)
        if stop or (before_end and save_every and step % save_every == 0):
            self.save()
        if stop:  # every rank stops, also those the signal did not reach
            raise Preempted(self.signalled.signum or signal.SIGTERM, step)

    def log(self, metrics: Optional[Metrics]) -> None:
        if metrics:
            self.tracker.log(metrics, self.job.step)

    def log_eval(self) -> None:
        self.log(self.job.evaluate())

    def finish(self) -> None:
        """Final eval, end metrics and checkpoint, then export; after a fault in the export
        the recovered run only exports again (its history already has the rest)."""
        if not self.saved_final:
            self.log_eval()
            self.log(self.job.end_metrics())
            self.save()
            self.saved_final = True
        if self.cfg.checkpoint.export_hf:
            self.log(self.job.export())

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt(self) -> CheckpointDir:
        return CheckpointDir.for_run(self.out, self.cfg.checkpoint)

    def save(self) -> None:
        """Every rank writes into the staging directory, then rank 0 seals it."""
        step = self.job.step
        state = self.job.save_to(self.ckpt.staging(step))
        if self.is_main:
            self.ckpt.commit(step, {**state, "job": self.job.job, "config": to_dict(self.cfg)})
        self.job.ranks.barrier()
        self.saved_at = time.monotonic()

    def checkpoint_to_resume(self, spec: str):
        """(path, trainer state) of the checkpoint ``spec`` names (``checkpoint.resume``:
        none / auto / a path), or (None, None); sets the job's step."""
        path = None
        if self.is_main:
            self.ckpt.clean_staging()
            path = self.ckpt.resolve(spec)
        path = self.job.ranks.broadcast(None if path is None else str(path))
        if path is None:
            return None, None
        path = Path(path)
        state = self.ckpt.load_state(path)
        self.job.step = int(state["global_step"])
        if self.is_main:
            log.info("resuming %s from %s at step %d", self.job.job, path, self.job.step)
        return path, state

"""Preemption: SIGTERM / SIGUSR1 (Slurm's ``--signal``, Kubernetes, spot notices) only note
the signal; the lifecycle finishes the step, checkpoints and raises :class:`Preempted`, which the
CLI turns into exit status :data:`PREEMPTED_EXIT`."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Optional

log = logging.getLogger(__name__)

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on a signal after a checkpoint; resume=auto goes on
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # Slurm, Kubernetes, spot notices


class Preempted(Exception):
    """The run stopped on a preemption signal after checkpointing ``step``."""

    def __init__(self, signum: int, step: int):
        super().__init__(
            f"stopped on {signal.Signals(signum).name} after checkpointing "
            f"step {step}; rerun with checkpoint.resume=auto to go on"
        )
        self.step = step


class Signalled:
    """The preemption signal received, if any (``signum``)."""

    signum: Optional[int] = None


class preemption_signals:
    """While inside: SIGTERM / SIGUSR1 only note the signal (the loop finishes its step,
    checkpoints and raises :class:`Preempted`); the previous handlers come back after."""

    def __enter__(self) -> Signalled:
        self.state, self.previous = Signalled(), {}
        if threading.current_thread() is threading.main_thread():
            for signum in PREEMPT_SIGNALS:
                self.previous[signum] = signal.signal(signum, self._note)
        return self.state

    def _note(self, signum, frame) -> None:
        if self.state.signum is not None:  # asked twice: stop now, the default way
            self.__exit__()
            signal.raise_signal(signum)
            return
        log.warning(
            "received %s: stopping after this step's checkpoint (send it again to stop at once)",
            signal.Signals(signum).name,
        )
        self.state.signum = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

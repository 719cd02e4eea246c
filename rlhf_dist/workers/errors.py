"""What a worker group raises (no ray import: the CLI sorts these without loading Ray)."""

from __future__ import annotations


class WorkerError(RuntimeError):
    """A worker raised or died; the message names the role and the rank (``where``)."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(message)
        self.where = where  # "critic rank 0": who failed


class WorkerLost(WorkerError):
    """A worker died or stopped answering (process killed, node lost, no answer within
    ``resources.timeout_s``): the job can go on after recreating its groups
    (``resources.max_restarts``); an exception raised inside a worker is not one."""


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

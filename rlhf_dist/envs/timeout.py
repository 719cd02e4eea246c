"""A call with a time limit, for environment steps and tools.

The call runs in a fresh daemon thread that the caller waits for at most ``timeout_s``.
Python cannot kill a thread: a call that hangs past its limit keeps running (and holding
whatever it holds) until it returns by itself, abandoned -- its result is dropped, and, being a
daemon thread, it does not keep the process from exiting.  The caller must not use the object
the call was working on again (an :class:`~rlhf_dist.envs.episode.Episode` ends its
trajectory).  An environment that can hang for good should run out of process (``env.workers``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional


class CallTimeout(TimeoutError):
    """The call did not return within its limit (its thread is left running)."""


def call_with_timeout(
    fn: Callable[..., Any], timeout_s: Optional[float], *args: Any, name: str = "rlhf_dist-env-call"
) -> Any:
    """``fn(*args)``, or :class:`CallTimeout` after ``timeout_s`` seconds; an exception of
    ``fn`` is re-raised here.  ``timeout_s`` 0 or None: called in this thread, no limit."""
    if not timeout_s:
        return fn(*args)
    outcome: Dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as err:  # re-raised in the caller's thread
            outcome["error"] = err

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise CallTimeout(f"did not return within {timeout_s:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]

"""Where environments live: an *env host* holds the environment objects of running episodes,
by key, and runs their calls (:class:`~rlhf_dist.envs.episode.Episode` asks it).

* :class:`LocalEnvHost` -- in this process (``env.workers: 0``): every call in a thread under
  ``env.step_timeout_s`` (:func:`~rlhf_dist.envs.timeout.call_with_timeout`).
* ``env.workers: N`` -- a pool of N Ray actors, each holding a :class:`LocalEnvHost`
  (``rlhf_dist.workers.env_pool.EnvPool``, built above this layer and handed to the
  rollout): the same three calls, made remotely.

The host interface (duck-typed; all three may be called from many threads at once):

* ``create(key)`` -- build a new environment for the episode ``key``;
* ``call(key, method, *args)`` -- its ``method`` (``reset``, ``step``, ``close``: a missing
  ``close`` is None), returning the value or raising what the call raised (a
  :class:`RemoteCallError` when it ran elsewhere) or :class:`~.timeout.CallTimeout`;
* ``drop(key)`` -- forget the environment (after ``close``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional

from .timeout import call_with_timeout

OPTIONAL = ("close",)  # methods an environment may lack (the call is then a no-op)


class EnvHostLost(RuntimeError):
    """The host lost the process an environment lived in (not the environment's fault): an
    :class:`~rlhf_dist.envs.episode.Episode` lets it through as it is, whatever
    ``env.on_error`` says (the run stops, or recovers with ``resources.max_restarts``)."""


class RemoteCallError(RuntimeError):
    """An environment call that raised in another process: ``kind`` is the exception's type
    name there, the message its message."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class LocalEnvHost:
    """Environments in this process; ``build()`` makes one, each call runs in a thread under
    ``timeout_s`` (0/None: no limit)."""

    def __init__(self, build: Callable[[], Any], timeout_s: Optional[float]):
        self.build, self.timeout_s = build, timeout_s
        self._envs: Dict[Any, Any] = {}
        self._lock = threading.Lock()

    def create(self, key: Any) -> None:
        env = call_with_timeout(self.build, self.timeout_s, name="rlhf_dist-env-construction")
        with self._lock:
            self._envs[key] = env

    def call(self, key: Any, method: str, *args: Any) -> Any:
        with self._lock:
            env = self._envs[key]
        fn = getattr(env, method, None)
        if fn is None and method in OPTIONAL:
            return None
        return call_with_timeout(fn, self.timeout_s, *args, name=f"rlhf_dist-env-{method}")

    def drop(self, key: Any) -> None:
        with self._lock:
            self._envs.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._envs)


__all__ = ["EnvHostLost", "LocalEnvHost", "RemoteCallError"]

"""``env.workers: N > 0``: the environments of multi-turn rollouts live in a pool of N Ray
actors instead of the driver -- for environments that are slow, hold resources, or can hang
for good (a hung call's thread is abandoned inside its worker, not in the driver).

:class:`EnvPool` is an env host (:mod:`rlhf_dist.envs.host`): the driver's
:class:`~rlhf_dist.envs.episode.Episode` objects keep the bookkeeping (turns, rewards,
``env.on_error``, errors named with the row); each environment object lives in one worker
(episode key ``k`` in worker ``k mod N``), which runs its calls in threads
(``max_concurrency``: many trajectories step at once) under ``env.step_timeout_s``.

* An environment's exception comes back as :class:`~rlhf_dist.envs.host.RemoteCallError`
  (its type's name and message), its timeout as :class:`~rlhf_dist.envs.timeout.CallTimeout`:
  the episode names them with the row as on the driver.
* A worker that does not answer within the timeout (plus :data:`GRACE_S`) is a timeout of
  that call; a worker that died is :class:`EnvWorkerLost` (a ``WorkerLost``: the run stops, or
  recovers with ``resources.max_restarts``; ``start`` makes a new pool).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from rlhf_dist.envs import CallTimeout, EnvHostLost, LocalEnvHost, RemoteCallError, env_builder
from rlhf_dist.workers.errors import WorkerLost, first_line

CPUS_PER_WORKER = 1.0
CONCURRENCY = 64  # calls one worker runs at once (threads): the trajectories stepping together
GRACE_S = 30.0  # beyond env.step_timeout_s: a worker this late is not answering at all
Outcome = Tuple[Any, ...]


class EnvWorker:
    """One worker of the pool: a :class:`~rlhf_dist.envs.host.LocalEnvHost` of the ``env``
    section's environments.  Calls answer an outcome instead of raising (``("ok", value)``,
    ``("timeout", message)``, ``("error", type name, message)``), so the driver tells the
    environment's own errors from Ray's."""

    def __init__(self, env: Any):
        self.host = LocalEnvHost(env_builder(env), env.step_timeout_s)

    @staticmethod
    def _outcome(fn, *args: Any) -> Outcome:
        try:
            return ("ok", fn(*args))
        except CallTimeout as err:
            return ("timeout", str(err))
        except Exception as err:  # the environment's error: reported, the worker goes on
            return ("error", type(err).__name__, str(err))

    def create(self, key: int) -> Outcome:
        return self._outcome(self.host.create, key)

    def call(self, key: int, method: str, args: Tuple[Any, ...]) -> Outcome:
        return self._outcome(self.host.call, key, method, *args)

    def drop(self, key: int) -> int:
        self.host.drop(key)
        return len(self.host)

    def location(self) -> Dict[str, Any]:
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "environments": len(self.host),
        }


class EnvWorkerLost(WorkerLost, EnvHostLost):
    """An env worker died (the message names it)."""


class EnvPool:
    """``env.workers`` :class:`EnvWorker` actors (no placement group: they hold no model),
    started by :meth:`start` (the rollout's, after Ray is up) and gone after :meth:`kill`."""

    def __init__(self, env: Any):
        self.env, self.world_size = env, env.workers
        self.workers: List[Any] = []
        limit = env.step_timeout_s
        self.timeout_s: Optional[float] = limit + GRACE_S if limit else None

    def cpus(self) -> float:
        return CPUS_PER_WORKER * self.world_size

    def start(self) -> None:
        self.kill()
        remote = ray.remote(EnvWorker).options(
            num_cpus=CPUS_PER_WORKER, max_concurrency=CONCURRENCY
        )
        self.workers = [remote.remote(self.env) for _ in range(self.world_size)]

    def kill(self) -> None:
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []

    # ------------------------------------------------------------------ the host calls
    def _get(self, key: int, call) -> Any:
        rank = key % self.world_size
        if not self.workers:
            raise RuntimeError("EnvPool: start() it first (the rollout starts it)")
        try:
            outcome = ray.get(call(self.workers[rank]), timeout=self.timeout_s)
        except GetTimeoutError:
            raise CallTimeout(
                f"did not return within {self.timeout_s:g} s (env worker {rank} gave no answer)"
            ) from None
        except RayActorError as err:
            raise EnvWorkerLost(
                f"env worker {rank} died: {type(err).__name__}: {first_line(err)}",
                f"env worker {rank}",
            ) from err
        if outcome[0] == "ok":
            return outcome[1]
        if outcome[0] == "timeout":
            raise CallTimeout(outcome[1])
        raise RemoteCallError(outcome[1], outcome[2])

    def create(self, key: int) -> None:
        self._get(key, lambda w: w.create.remote(key))

    def call(self, key: int, method: str, *args: Any) -> Any:
        return self._get(key, lambda w: w.call.remote(key, method, args))

    def drop(self, key: int) -> None:
        if self.workers:  # fire and forget: nothing to wait for
            self.workers[key % self.world_size].drop.remote(key)

    def locations(self) -> List[Dict[str, Any]]:
        """Per worker: node, address, pid and how many environments it holds now."""
        return ray.get([w.location.remote() for w in self.workers], timeout=self.timeout_s)


def env_pool(env: Any) -> Optional[EnvPool]:
    """The pool ``env`` asks for (``env.workers`` > 0 with an ``env.name``), else None."""
    return EnvPool(env) if env.enabled and env.workers else None


__all__ = ["EnvPool", "EnvWorker", "EnvWorkerLost", "env_pool"]

"""The asynchronous pipeline (``rollout.max_staleness`` = k ≥ 1): the rollout backend samples
the next prompt batches while the learners train on the current one.

A producer thread runs the backend's ``produce`` (sampling only: the vLLM engines, or the
turns of multi-turn trajectories over them) for batches drawn ahead, in order; the driver's
thread keeps the actor.  Per iteration at learner version v (:meth:`AsyncRollout.next_batch`):

1. the oldest batch in flight is taken (waiting for it: ``perf/learner_idle_s``);
2. when nothing is left in flight the engines are idle: they get the actor's weights of
   version v, and the next k batches are started with them (trained at versions v+1 … v+k:
   never more than k versions stale).  Refilling only then keeps the versions independent
   of timing, so a run is reproducible and a resumed run equals an uninterrupted one;
3. the taken batch is finished on the driver's thread (the actor's behaviour log-probs at
   version v: the proximal policy of the PPO ratio; the engines' own log-probs, of the
   version that sampled, give the importance weights, ``rollout.tis_*``), and every row
   carries ``versions``, the policy version that sampled it.

With k = 1 this is one-step off-policy (the engines sample batch i+1 with the weights of
version i while the learners train on batch i).  Batches sampled but not trained on are
part of a checkpoint (:meth:`pending_state`), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import collections
import concurrent.futures
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import torch

from rlhf_dist.config import ConfigError
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.interface import Metrics, Rollout, RolloutWrapper


class StaleExperienceError(RuntimeError):
    """A row sampled by weights more than ``rollout.max_staleness`` versions old reached the
    learner (a bug of the pipeline, never silently trained on)."""


def check_staleness(versions: torch.Tensor, version: int, max_staleness: int) -> Metrics:
    """``async/staleness_{mean,max}`` of the rows' ``versions`` at learner ``version``; a
    :class:`StaleExperienceError` naming the versions when one is older than the bound."""
    staleness = version - versions.long()
    worst = int(staleness.max())
    if worst > max_staleness:
        rows = (staleness > max_staleness).nonzero().flatten().tolist()
        raise StaleExperienceError(
            f"rows {rows[:8]} were sampled by policy version {version - worst}, {worst} "
            f"versions before the learner's {version} (rollout.max_staleness={max_staleness})"
        )
    return {
        "async/staleness_mean": float(staleness.float().mean()),
        "async/staleness_max": float(worst),
    }


@dataclass
class InFlight:
    """A batch drawn ahead: its prompt rows, the weights version that samples it, and the
    producer's future (or, restored from a checkpoint, its result)."""

    rows: List[dict]
    version: int
    future: Optional[concurrent.futures.Future] = None
    result: Optional[Tuple[Batch, Metrics]] = None

    def wait(self) -> Tuple[Batch, Metrics]:
        if self.result is None:
            self.result = self.future.result()
        return self.result


class AsyncRollout(RolloutWrapper):
    """Runs the ``inner`` backend ``rollout.max_staleness`` batches ahead (see the module);
    every other hook is the inner backend's."""

    def __init__(self, inner: Rollout):
        super().__init__(inner)
        if not inner.runs_ahead:
            raise ConfigError(
                f"rollout.max_staleness: the {self.cfg.rollout.backend!r} backend samples with "
                "the actor's own processes, so nothing can run ahead of the learners; use a "
                "backend with processes of its own (rollout.backend=vllm)"
            )
        self.k = self.cfg.rollout.max_staleness
        self.queue: Deque[InFlight] = collections.deque()
        self.pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self.busy: List[List[float]] = []  # the producer's [start, end] (end 0: running)
        self.since = time.perf_counter()  # the start of the window perf/rollout_idle_s covers

    # ---------------------------------------------------------------- lifetime
    def start(self, actor: Any, placement: Any) -> None:
        super().start(actor, placement)
        self._stop_producer()
        self.queue.clear()
        self.busy, self.since = [], time.perf_counter()
        self.pool = concurrent.futures.ThreadPoolExecutor(1, "rlhf_dist-rollout-producer")

    def kill(self) -> None:
        self._stop_producer()
        super().kill()

    def _stop_producer(self) -> None:
        if self.pool is not None:
            for entry in self.queue:
                if entry.future is not None:
                    entry.future.cancel()
            self.pool.shutdown(wait=False)
            self.pool = None

    # ---------------------------------------------------------------- the pipeline
    def sync_weights(self, version: int) -> Metrics:
        """Nothing now: the engines take new weights when they are idle (:meth:`_refill`)."""
        return {}

    def next_batch(
        self, draw: Callable[[], Tuple[Batch, int, List[dict]]], version: int
    ) -> Tuple[List[dict], Batch, Metrics]:
        metrics = {"perf/rollout_idle_s": self._producer_idle()}
        metrics.update(self._refill(draw, version, self.k + 1))  # the first: one to train now
        started = time.perf_counter()
        entry = self.queue.popleft()
        experience, sampled = entry.wait()
        waited = time.perf_counter() - started
        metrics.update(self._refill(draw, version, self.k))
        experience, finished = self.inner.finish(experience)
        experience = experience.with_(versions=torch.full((len(experience),), entry.version))
        return (
            entry.rows,
            experience,
            {
                **metrics,
                **sampled,
                **finished,
                "perf/learner_idle_s": waited,
                "async/in_flight": float(len(self.queue)),
            },
        )

    def _refill(self, draw, version: int, batches: int) -> Metrics:
        """With nothing in flight: the weights of ``version`` into the sampler, then
        ``batches`` batches started with them."""
        if self.queue:
            return {}
        metrics = self.inner.sync_weights(version)
        for _ in range(batches):
            prompts, seed, rows = draw()
            future = self.pool.submit(self._produce, prompts, seed, rows)
            self.queue.append(InFlight(rows, version, future))
        return metrics

    def _produce(self, prompts: Batch, seed: int, rows: List[dict]) -> Tuple[Batch, Metrics]:
        span = [time.perf_counter(), 0.0]
        self.busy.append(span)
        try:
            return self.inner.produce(prompts, seed, rows)
        finally:
            span[1] = time.perf_counter()

    def _producer_idle(self) -> float:
        """Seconds since the last call the producer had nothing to sample (the engines sat
        idle: syncing, or waiting for the learners to take a batch)."""
        now = time.perf_counter()
        busy = sum(
            max(0.0, min(end or now, now) - max(start, self.since)) for start, end in self.busy
        )
        self.busy = [span for span in self.busy if not span[1]]
        idle, self.since = max(0.0, now - self.since - busy), now
        return idle

    # ---------------------------------------------------------------- checkpoints
    def pending_state(self) -> List[Dict[str, Any]]:
        """The batches in flight, waited for: what a checkpoint keeps of them."""
        pending = []
        for entry in self.queue:
            batch, metrics = entry.wait()
            pending.append(
                {
                    "rows": entry.rows,
                    "version": entry.version,
                    "tensors": batch.tensors,
                    "extras": batch.extras,
                    "meta": batch.meta,
                    "metrics": metrics,
                }
            )
        return pending

    def restore_pending(self, entries: Sequence[Dict[str, Any]]) -> None:
        self.queue.clear()
        for e in entries:
            batch = Batch(e["tensors"], e["meta"], e["extras"])
            self.queue.append(
                InFlight(list(e["rows"]), int(e["version"]), result=(batch, dict(e["metrics"])))
            )


__all__ = ["AsyncRollout", "InFlight", "StaleExperienceError", "check_staleness"]

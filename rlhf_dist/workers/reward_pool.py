"""A small pool of Ray actors that run the reward functions (``ppo.reward_workers``), for
verifiers too slow for the driver: each call is split over the pool in contiguous row
chunks and must answer within ``ppo.reward_timeout_s``.

A reward error inside a worker (wrong count, a non-number) reaches the driver as the same
``RewardError`` it would raise there; a NaN as the same skippable ``NonFiniteError``; a
worker that dies, or does not answer in time, is a ``WorkerLost`` naming it and the
timeout's setting (the run stops, or recovers with ``resources.max_restarts``).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import ray
import torch

from rlhf_dist.rewards import RewardError, load_rewards
from rlhf_dist.workers.worker_group import RayGroup

DEFAULT_TIMEOUT_S = 300.0


class RewardFnWorker:
    """Holds the run's reward functions, loaded from the ``ppo`` section as on the driver."""

    def __init__(self, ppo: Any, label_key: Optional[str]):
        torch.set_num_threads(1)
        self.rewards = load_rewards(ppo, label_key)

    def score(
        self,
        prompts: List[str],
        responses: List[str],
        labels: List[Any],
        extras: List[Dict[str, Any]],
        first_row: int,
    ) -> torch.Tensor:
        return self.rewards(prompts, responses, labels, extras, first_row)

    def location(self) -> Dict[str, Any]:
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
        }


class RewardPool(RayGroup):
    """``workers`` reward actors of one CPU each (no placement group: they hold no model)."""

    timeout_key = "ppo.reward_timeout_s"
    passthrough = (RewardError,)

    def __init__(self, ppo: Any, label_key: Optional[str]):
        self.role, self.world_size = "reward_fn worker", ppo.reward_workers
        self.timeout_s = ppo.reward_timeout_s or DEFAULT_TIMEOUT_S
        remote_cls = ray.remote(RewardFnWorker).options(num_cpus=1)
        self.workers = [remote_cls.remote(ppo, label_key) for _ in range(self.world_size)]

    def __call__(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        labels: Sequence[Any],
        extras: Sequence[Dict[str, Any]],
    ) -> torch.Tensor:
        """The rewards of every row, each worker scoring one contiguous chunk of the rows
        (as the driver would: the same functions, the same row order)."""
        n = len(responses)
        bounds = [n * i // self.world_size for i in range(self.world_size + 1)]
        refs, ranks = [], []
        for rank, (a, b) in enumerate(zip(bounds, bounds[1:])):
            if b > a:
                refs.append(
                    self.workers[rank].score.remote(
                        list(prompts[a:b]),
                        list(responses[a:b]),
                        list(labels[a:b]),
                        list(extras[a:b]),
                        a,
                    )
                )
                ranks.append(rank)
        return torch.cat(self._get(refs, ranks)) if refs else torch.zeros(0)

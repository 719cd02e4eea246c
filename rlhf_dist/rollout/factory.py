"""The rollout a PPO/GRPO job runs: the backend ``rollout.backend`` names
(:mod:`rlhf_dist.rollout.interface`), wrapped for what the config asks on top of it --
multi-turn trajectories when ``env.name`` is set (:mod:`rlhf_dist.rollout.multi_turn`), run
ahead of the learners when ``rollout.max_staleness`` ≥ 1
(:mod:`rlhf_dist.rollout.async_rollout`)."""

from __future__ import annotations

from typing import Any

from rlhf_dist.config import Config
from rlhf_dist.rollout.async_rollout import AsyncRollout
from rlhf_dist.rollout.interface import Rollout, rollout_backend
from rlhf_dist.rollout.multi_turn import MultiTurnRollout


def make_rollout(cfg: Config, tokenizer: Any, env_pool: Any = None) -> Rollout:
    """``env_pool``: the environments' processes (``env.workers``; built by the caller, which
    may import Ray: ``workers.env_pool.env_pool``), None to step them in this process."""
    rollout = rollout_backend(cfg.rollout.backend)(cfg, tokenizer)
    if cfg.env.enabled:
        rollout = MultiTurnRollout(rollout, env_pool)
    if cfg.rollout.max_staleness:
        rollout = AsyncRollout(rollout)
    return rollout


__all__ = ["make_rollout"]

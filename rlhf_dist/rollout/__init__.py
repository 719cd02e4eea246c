"""Rollout side of PPO: the rollout interface and backends, generation, reward shaping,
advantages and the replay buffer.

* :class:`Rollout` -- the interface every rollout backend implements (the contract:
  :mod:`rlhf_dist.rollout.interface`), selected by ``rollout.backend`` from
  :data:`rlhf_dist.config.registries.ROLLOUT_BACKENDS`; :func:`register_rollout` adds one.
* :class:`HFGenerator` -- HF ``generate`` → ``Batch{sequences, attention_mask, action_mask}``;
  decoding helpers, :func:`concat_rollouts` for per-rank results.  (The learners' forward,
  ``action_logprobs``, lives with the model code: :mod:`rlhf_dist.models.learner_forward`.)
* :class:`RewardShaper` -- scores − β·KL → ``token_rewards``; the KL controller.
* :func:`compute_advantages` -- GAE or a critic-free estimator → ``advantages``, ``returns``.
* :class:`ReplayBuffer` -- shuffled minibatches for ``ppo_epochs`` passes.

Tensor alignment (T vs T−1) is documented in :mod:`rlhf_dist.rollout.generate`.
Exports resolve lazily (PEP 562): ``import rlhf_dist.rollout`` imports neither torch nor
transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List

from rlhf_dist._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from rlhf_dist.rollout.estimators import ADVANTAGE_FNS, compute_advantages
    from rlhf_dist.rollout.backends import check_backend, make_sampler
    from rlhf_dist.rollout.factory import make_rollout
    from rlhf_dist.rollout.interface import Rollout, register_rollout
    from rlhf_dist.rollout.generate import (
        HFGenerator,
        concat_rollouts,
        decode_prompts,
        decode_responses,
        response_mask,
        response_token_ids,
        sampling_temperature,
        stop_ids,
        truncated_rows,
    )
    from rlhf_dist.rollout.replay import ReplayBuffer, epoch_permutation
    from rlhf_dist.rollout.reward_shaping import RewardShaper, sequence_kl

_EXPORTS: Dict[str, str] = {
    "HFGenerator": "generate",
    "sampling_temperature": "generate",
    "concat_rollouts": "generate",
    "decode_prompts": "generate",
    "decode_responses": "generate",
    "response_mask": "generate",
    "response_token_ids": "generate",
    "stop_ids": "generate",
    "truncated_rows": "generate",
    "RewardShaper": "reward_shaping",
    "sequence_kl": "reward_shaping",
    "ADVANTAGE_FNS": "estimators",
    "compute_advantages": "estimators",
    "ReplayBuffer": "replay",
    "epoch_permutation": "replay",
    "Rollout": "interface",
    "make_rollout": "factory",
    "register_rollout": "interface",
    "check_backend": "backends",
    "make_sampler": "backends",
}

__all__: List[str] = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

"""Advantages and returns of an iteration's experience, by ``ppo.advantage_estimator``.

All tensors are per action, ``(N, T−1)``, 0 off ``action_mask`` (see
:mod:`rlhf_dist.rollout.generate` for the alignment).

* ``gae`` (needs a critic): ``algo.gae(token_rewards, values, action_mask, γ, λ)``;
  returns = advantages + values are the critic's regression targets.
* critic-free (``reinforce``, ``mean_baseline``, ``rloo``, ``group_norm``): the sequence
  reward is the sum of the token rewards over the action mask (= score − β·KL); the estimator
  compares the ``n_samples`` consecutive rows of each prompt; the sequence advantage is put on
  every action of its row.  γ and λ are not used (one reward per sequence).  There is no
  critic, so returns = advantages (logged only).
* ``reinforce_pp`` (REINFORCE++, Hu 2025, arXiv:2501.03262): no critic, no groups; each
  action's return-to-go of the token rewards, ``algo.discounted_returns(token_rewards,
  action_mask, γ)`` -- the per-token KL penalty counts only from where it is paid -- then
  normalised over every action of the batch (always: it is part of the estimator).

Whitening (``ppo.whiten_advantages``): ``algo.masked_whiten`` over every action of the batch,
applied after the estimator for ``gae``, ``reinforce``, ``mean_baseline`` and ``rloo``.  It is
NOT applied for ``group_norm``: GRPO's advantages are already normalised within each prompt,
and a second batch-level normalisation would rescale prompts against each other; nor for
``dr_grpo``, whose point is not to divide by a std (Liu et al. 2025).  Returns are
never whitened.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, Tuple

import torch

from rlhf_dist.algo import (
    ADVANTAGE_ESTIMATORS,
    compute_critic_free_advantages,
    discounted_returns,
    expand_to_tokens,
    gae,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
)
from rlhf_dist.protocol import Batch

AdvantageFn = Callable[[Batch, Any, int], Tuple[torch.Tensor, torch.Tensor]]

# estimators never whitened over the batch: normalised already (group_norm within each
# prompt, reinforce_pp over the batch), or by definition unscaled (dr_grpo)
ALREADY_NORMALISED = frozenset({"group_norm", "reinforce_pp", "dr_grpo"})


def _require(batch: Batch, keys, estimator: str) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(
            f"advantage_estimator={estimator!r} needs batch key(s) {missing} "
            f"((N, T-1) per action); the batch has {batch.keys()}"
        )


def _gae(batch: Batch, ppo: Any, n_samples: int) -> Tuple[torch.Tensor, torch.Tensor]:
    _require(batch, ("token_rewards", "values", "action_mask"), "gae")
    return gae(
        batch["token_rewards"], batch["values"], batch["action_mask"], gamma=ppo.gamma, lam=ppo.lam
    )


def _critic_free(
    name: str, batch: Batch, ppo: Any, n_samples: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    _require(batch, ("token_rewards", "action_mask"), name)
    mask = batch["action_mask"]
    seq_rewards = masked_sum(batch["token_rewards"], mask, dim=-1)
    seq_adv = compute_critic_free_advantages(name, seq_rewards, n_samples=n_samples)
    advantages = expand_to_tokens(seq_adv, mask)
    return advantages, advantages.clone()


def _reinforce_pp(batch: Batch, ppo: Any, n_samples: int) -> Tuple[torch.Tensor, torch.Tensor]:
    _require(batch, ("token_rewards", "action_mask"), "reinforce_pp")
    mask = batch["action_mask"]
    returns = discounted_returns(batch["token_rewards"], mask, ppo.gamma)
    return masked_whiten(returns, mask), returns


ADVANTAGE_FNS: Dict[str, AdvantageFn] = {
    "gae": _gae,
    "reinforce_pp": _reinforce_pp,
    **{name: partial(_critic_free, name) for name in ADVANTAGE_ESTIMATORS},
}


@torch.no_grad()
def compute_advantages(batch: Batch, ppo: Any, n_samples: int) -> Tuple[Batch, Dict[str, float]]:
    """``(batch + advantages + returns, metrics)`` for ``ppo.advantage_estimator``.

    ``batch`` needs ``token_rewards`` and ``action_mask`` (and ``values`` for ``gae``);
    ``n_samples`` is the number of consecutive rows per prompt (critic-free estimators).
    Metrics: ``adv/mean``, ``adv/std`` (over actions, after whitening), ``returns/mean``.
    """
    name = ppo.advantage_estimator
    if name not in ADVANTAGE_FNS:
        raise ValueError(
            f"ppo.advantage_estimator: unknown {name!r}; valid: {sorted(ADVANTAGE_FNS)}"
        )
    advantages, returns = ADVANTAGE_FNS[name](batch, ppo, n_samples)
    mask = batch["action_mask"]
    if ppo.whiten_advantages and name not in ALREADY_NORMALISED:
        advantages = masked_whiten(advantages, mask)
    metrics = {
        "adv/mean": masked_mean(advantages, mask).item(),
        "adv/std": masked_var(advantages, mask, unbiased=False).sqrt().item(),
        "returns/mean": masked_mean(returns, mask).item(),
    }
    return batch.with_(advantages=advantages, returns=returns), metrics

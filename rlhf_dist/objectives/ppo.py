"""The PPO learners' objectives on one micro-batch of experience: the actor's clipped policy
loss (minus the entropy bonus) and the critic's clipped value loss.  Shared by the Ray role
workers and any single-process loop (``examples/ppo_single.py``), so both optimise the same
thing."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from rlhf_dist import algo
from rlhf_dist.config import PPOConfig
from rlhf_dist.protocol import Batch
from rlhf_dist.models.learner_forward import action_logprobs

Objective = Tuple[torch.Tensor, Dict[str, float]]


def policy_objective(
    model,
    micro: Batch,
    temperature: float,
    ppo: PPOConfig,
    tis_cap: Optional[float] = None,
    horizon: Optional[int] = None,
    tis_mode: str = "truncate",
) -> Objective:
    """PPO policy loss of ``model`` on ``micro`` (``old_logprobs``, ``advantages``,
    ``action_mask``) minus ``ppo.entropy_coef`` × its mean entropy; ``actor/`` metrics.
    With ``ppo.kl_in_loss`` plus ``ppo.kl_coef`` × the ``ppo.kl_estimator`` KL of the current
    policy from the reference (``ref_logprobs``), aggregated like the policy loss (GRPO,
    Shao et al. 2024, eq. 3, with k3).
    With ``tis_cap`` each token's loss is weighted by the importance ratio π_old/π_engine of
    the actor's behaviour log-probs to the rollout sampler's (``engine_logprobs``), bounded
    by ``tis_cap`` as ``tis_mode`` says (:mod:`rlhf_dist.algo.importance`).  ``horizon``:
    the constant of ``seq_mean_token_sum_norm``, the longest response
    (``rollout.max_new_tokens``)."""
    # without an entropy bonus the entropy is a metric: no backward through it
    logprobs, entropy = action_logprobs(
        model, micro, temperature, return_entropy=True, entropy_grad=ppo.entropy_coef != 0
    )
    weights, extra = None, {}
    if tis_cap is not None:
        weights = algo.importance_weights(
            micro["old_logprobs"], micro["engine_logprobs"], tis_cap, tis_mode
        )
        extra["actor/tis_weight_mean"] = algo.masked_mean(weights, micro["action_mask"]).item()
    low, high = ppo.clip_range
    loss, metrics = algo.ppo_policy_loss(
        logprobs,
        micro["old_logprobs"],
        micro["advantages"],
        micro["action_mask"],
        low,
        dual_clip=ppo.dual_clip,
        agg=ppo.loss_agg,
        token_weights=weights,
        clip_eps_high=high,
        ratio_level=ppo.ratio_level,
        horizon=horizon,
    )
    if ppo.kl_in_loss:
        kl = algo.aggregate_loss(
            algo.kl_estimate(logprobs, micro["ref_logprobs"], ppo.kl_estimator),
            micro["action_mask"],
            ppo.loss_agg,
            horizon,
        )
        loss = loss + ppo.kl_coef * kl
        extra["actor/kl_loss"] = float(kl.detach())
    entropy = algo.masked_mean(entropy, micro["action_mask"])
    loss = loss - ppo.entropy_coef * entropy
    return loss, {
        **{f"actor/{k}": v for k, v in metrics.items()},
        **extra,
        "actor/policy_loss": float(loss.detach()),
        "actor/entropy": float(entropy.detach()),
    }


def value_objective(
    values: torch.Tensor, micro: Batch, ppo: PPOConfig, horizon: Optional[int] = None
) -> Objective:
    """Clipped value loss of the critic's ``values`` on ``micro`` (``values`` at rollout,
    ``returns``, ``action_mask``); ``critic/`` metrics."""
    loss, metrics = algo.value_loss(
        values,
        micro["values"],
        micro["returns"],
        micro["action_mask"],
        clip_eps=ppo.value_clip,
        agg=ppo.loss_agg,
        horizon=horizon,
    )
    return loss, {
        **{f"critic/{k}": v for k, v in metrics.items()},
        "critic/value_loss": float(loss.detach()),
    }

"""Importance weights for the rollout/training mismatch: tokens sampled by a rollout backend
(π_sampler: vLLM, possibly with weights some policy versions old in asynchronous training)
trained against the actor's behaviour log-probs π (recomputed at the learner's version; the
PPO ratio is taken against those, AReaL's decoupled PPO, Fu et al. 2025).  Each token's policy
loss is weighted by r = π(a)/π_sampler(a), bounded by ``cap``:

* ``truncate`` -- min(r, cap) (truncated IS; Ionides 2008, applied to LLM RL by Yao et al.
  2025, "Your efficient RL framework secretly brings you off-policy RL training");
* ``mask`` -- r inside [1/cap, cap], 0 outside: tokens too far off-policy are dropped from
  the gradient instead of down-weighted (masked IS, verl's MIS / IcePop).

No gradient flows through the weights.  Shapes ``(B, T)``.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch

from ._common import check_same_shape
from .masked import masked_mean


def _ratio(logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, cap: float) -> torch.Tensor:
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    check_same_shape(logprobs=logprobs, sampler_logprobs=sampler_logprobs)
    return torch.exp(logprobs.detach() - sampler_logprobs.detach())


def truncated_is_weights(
    logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, cap: float
) -> torch.Tensor:
    """min(π(a)/π_sampler(a), cap) per token."""
    return _ratio(logprobs, sampler_logprobs, cap).clamp(max=cap)


def masked_is_weights(
    logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, cap: float
) -> torch.Tensor:
    """π(a)/π_sampler(a) where it lies in [1/cap, cap], else 0."""
    ratio = _ratio(logprobs, sampler_logprobs, cap)
    inside = (ratio >= 1.0 / cap) & (ratio <= cap)
    return torch.where(inside, ratio, torch.zeros_like(ratio))


IS_WEIGHTS: Dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {
    "truncate": truncated_is_weights,
    "mask": masked_is_weights,
}


def importance_weights(
    logprobs: torch.Tensor, sampler_logprobs: torch.Tensor, cap: float, mode: str = "truncate"
) -> torch.Tensor:
    """The ``mode`` weights of :data:`IS_WEIGHTS`."""
    if mode not in IS_WEIGHTS:
        raise ValueError(
            f"unknown importance-weight mode {mode!r}; choose one of {sorted(IS_WEIGHTS)}"
        )
    return IS_WEIGHTS[mode](logprobs, sampler_logprobs, cap)


def importance_stats(
    logprobs: torch.Tensor,
    sampler_logprobs: torch.Tensor,
    mask: torch.Tensor,
    cap: float,
    mode: str = "truncate",
) -> Dict[str, float]:
    """Over the tokens of ``mask``: the weights' mean (``tis_weight_mean``), the fraction
    whose weight differs from the raw ratio (``tis_clipped_frac``: truncated or masked), and
    KL(π_sampler ‖ π) estimated on the sampled tokens (``sampler_kl``: mean of
    log π_sampler − log π, k1)."""
    if not mask.bool().any():
        return {"tis_weight_mean": 0.0, "tis_clipped_frac": 0.0, "sampler_kl": 0.0}
    ratio = _ratio(logprobs, sampler_logprobs, cap)
    weights = importance_weights(logprobs, sampler_logprobs, cap, mode)
    return {
        "tis_weight_mean": float(masked_mean(weights, mask)),
        "tis_clipped_frac": float(masked_mean((weights != ratio).float(), mask)),
        "sampler_kl": float(masked_mean(sampler_logprobs - logprobs, mask)),
    }


__all__ = [
    "IS_WEIGHTS",
    "importance_stats",
    "importance_weights",
    "masked_is_weights",
    "truncated_is_weights",
]

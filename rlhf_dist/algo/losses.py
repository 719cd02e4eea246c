"""PPO policy and value losses, loss aggregation over tokens, explained variance.

Losses are 0-dim float32 tensors (float64 for float64 inputs) that carry gradients;
metrics are dicts of python floats (``.item()``, one device sync each).
"""

from __future__ import annotations

from typing import Callable

import torch

from ._common import as_bool_mask, check_same_shape, lookup, to_compute
from .masked import masked_mean, masked_sum, masked_var


def _token_mean(loss_tok: torch.Tensor, mask: torch.Tensor, horizon: int) -> torch.Tensor:
    return masked_mean(loss_tok, mask)


def _over_sequences(per_seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B,) per-sequence losses over the rows with at least one unmasked token."""
    return masked_mean(per_seq, as_bool_mask(mask).any(dim=-1))


def _seq_mean_token_mean(loss_tok: torch.Tensor, mask: torch.Tensor, horizon: int) -> torch.Tensor:
    return _over_sequences(masked_mean(loss_tok, mask, dim=-1), mask)


def _seq_mean_token_sum(loss_tok: torch.Tensor, mask: torch.Tensor, horizon: int) -> torch.Tensor:
    return _over_sequences(masked_sum(loss_tok, mask, dim=-1), mask)


def _seq_mean_token_sum_norm(
    loss_tok: torch.Tensor, mask: torch.Tensor, horizon: int
) -> torch.Tensor:
    return _over_sequences(masked_sum(loss_tok, mask, dim=-1) / horizon, mask)


Aggregator = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
LOSS_AGGREGATORS: dict[str, Aggregator] = {
    "token_mean": _token_mean,
    "seq_mean_token_mean": _seq_mean_token_mean,
    "seq_mean_token_sum": _seq_mean_token_sum,
    "seq_mean_token_sum_norm": _seq_mean_token_sum_norm,
}


def _sequence_logratio(logratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's mean log-ratio over its unmasked tokens, on every token of the row."""
    return masked_mean(logratio, mask, dim=-1).unsqueeze(-1).expand_as(logratio)


RATIO_LEVELS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "token": lambda logratio, mask: logratio,
    "sequence": _sequence_logratio,
}


def aggregate_loss(
    loss_tok: torch.Tensor, mask: torch.Tensor, agg: str = "token_mean", horizon: int | None = None
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss to a scalar.

    "token_mean": mean over all unmasked tokens of the batch (long responses weigh more).
    "seq_mean_token_mean": mean over each sequence's unmasked tokens, then over sequences.
    "seq_mean_token_sum": sum over each sequence's unmasked tokens, then mean over sequences.
    "seq_mean_token_sum_norm": each sequence's token sum divided by the constant ``horizon``
    (the longest response allowed), then the mean over sequences -- Dr. GRPO's unbiased
    form (Liu et al. 2025, eq. 3): no per-sequence length normalisation, and the same
    constant for every micro-batch.  ``horizon=None`` uses T, which differs between
    micro-batches padded to different lengths: pass the constant.
    Sequences with an empty mask are left out of the mean over sequences; an all-empty batch
    gives 0.  Unknown ``agg`` -> ValueError.
    """
    aggregator = lookup(LOSS_AGGREGATORS, agg, "loss aggregation")
    check_same_shape(loss_tok=loss_tok, mask=mask)
    horizon = loss_tok.shape[-1] if horizon is None else horizon
    if horizon <= 0:
        raise ValueError(f"horizon must be > 0, got {horizon}")
    return aggregator(loss_tok, mask, horizon)


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    dual_clip: float | None = None,
    agg: str = "token_mean",
    token_weights: torch.Tensor | None = None,
    clip_eps_high: float | None = None,
    ratio_level: str = "token",
    horizon: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise.

    logprobs (with grad), old_logprobs, advantages, mask: (B, T).
    ratio = exp(logprobs - old_logprobs); loss_t = max(-A ratio, -A clip(ratio, 1-eps, 1+eps_h))
    with eps_h = ``clip_eps_high`` (default ``clip_eps``; DAPO's clip-higher, Yu et al. 2025,
    raises it, e.g. 0.28 with eps 0.2, so unlikely tokens can gain probability).
    ``ratio_level="sequence"`` (GSPO, Zheng et al. 2025): every token of a sequence uses the
    sequence's ratio exp(mean over its tokens of logprobs - old_logprobs), clipped as one --
    with ``agg="seq_mean_token_mean"`` this is GSPO's mean over sequences of
    min(s A, clip(s) A); the gradient reaches every token through the mean.
    ``dual_clip=c`` (c > 1; Ye et al. 2020): for A < 0 the loss is also capped at -c A.
    ``token_weights`` (B, T), no grad: each token's loss is multiplied by it before
    aggregation (e.g. :func:`truncated_is_weights`).  ``agg`` and ``horizon``: see
    :func:`aggregate_loss`.
    Returns ``(loss, metrics)`` with metrics (python floats, masked means):
      clipfrac      -- fraction of tokens where the clipped term is taken (strictly larger);
      approx_kl     -- k3 estimate of KL(old || new): mean of (ratio - 1) - logratio;
      ratio_mean    -- mean ratio;
      dual_clipfrac -- only with dual_clip: fraction of tokens capped at -c A.
    """
    clip_eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    if clip_eps <= 0 or clip_eps_high <= 0:
        raise ValueError(f"clip_eps and clip_eps_high must be > 0, got {clip_eps}, {clip_eps_high}")
    if dual_clip is not None and dual_clip <= 1:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    logprobs, old_logprobs, advantages = to_compute(logprobs, old_logprobs, advantages)
    old_logprobs, advantages = old_logprobs.detach(), advantages.detach()

    logratio = lookup(RATIO_LEVELS, ratio_level, "ratio level")(logprobs - old_logprobs, mask)
    ratio = torch.exp(logratio)
    surr1 = -advantages * ratio
    surr2 = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps_high)
    loss_tok = torch.maximum(surr1, surr2)

    metrics = {}
    if dual_clip is not None:
        cap = -dual_clip * advantages
        capped = (advantages < 0) & (loss_tok > cap)
        loss_tok = torch.where(capped, cap, loss_tok)
        metrics["dual_clipfrac"] = masked_mean(capped.float(), mask).item()
    if token_weights is not None:
        check_same_shape(logprobs=logprobs, token_weights=token_weights)
        loss_tok = loss_tok * token_weights.detach().to(loss_tok.dtype)

    loss = aggregate_loss(loss_tok, mask, agg, horizon)
    with torch.no_grad():
        metrics["clipfrac"] = masked_mean((surr2 > surr1).float(), mask).item()
        metrics["approx_kl"] = masked_mean((ratio - 1) - logratio, mask).item()
        metrics["ratio_mean"] = masked_mean(ratio, mask).item()
    return loss, metrics


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float | None = None,
    agg: str = "token_mean",
    horizon: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Critic regression loss, optionally clipped around the old values.

    values (with grad), old_values, returns, mask: (B, T).
    clip_eps=None: loss = 0.5 * agg((V - R)^2).
    clip_eps=e:    loss = 0.5 * agg(max((V - R)^2, (V_old + clip(V - V_old, -e, e) - R)^2)).
    Returns ``(loss, metrics)``: vf_clipfrac (fraction where the clipped term is strictly
    larger; 0.0 without clipping) and values_mean, as python floats.
    """
    if clip_eps is not None and clip_eps <= 0:
        raise ValueError(f"clip_eps must be > 0 or None, got {clip_eps}")
    check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    values, old_values, returns = to_compute(values, old_values, returns)
    old_values, returns = old_values.detach(), returns.detach()

    loss_unclipped = (values - returns) ** 2
    if clip_eps is None:
        loss_tok = loss_unclipped
        clipfrac = 0.0
    else:
        values_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        loss_clipped = (values_clipped - returns) ** 2
        loss_tok = torch.maximum(loss_unclipped, loss_clipped)
        clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), mask).item()

    loss = 0.5 * aggregate_loss(loss_tok, mask, agg, horizon)
    metrics = {"vf_clipfrac": clipfrac, "values_mean": masked_mean(values.detach(), mask).item()}
    return loss, metrics


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over unmasked positions, as a python float.

    values, returns, mask: (B, T).  1 = perfect critic, 0 = no better than a constant, < 0
    worse.  Population variances (the n vs n-1 choice cancels).  NaN if Var(R) == 0.
    """
    check_same_shape(values=values, returns=returns, mask=mask)
    values, returns = to_compute(values, returns)
    var_returns = masked_var(returns, mask, unbiased=False).item()
    if var_returns == 0:
        return float("nan")
    var_residual = masked_var(returns - values, mask, unbiased=False).item()
    return 1.0 - var_residual / var_returns

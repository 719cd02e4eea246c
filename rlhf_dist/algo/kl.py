"""Per-token KL estimators and KL-shaped token rewards.

Estimators of KL(pi || ref) from samples of pi (J. Schulman, "Approximating KL divergence",
2020), with logr = ref_logprobs - logprobs:
  k1 = -logr                    (unbiased, high variance, can be negative)
  k2 = 0.5 * logr**2            (biased, low variance, >= 0)
  k3 = exp(logr) - logr - 1     (unbiased, low variance, >= 0)
"""

from __future__ import annotations

from typing import Callable

import torch

from ._common import as_bool_mask, check_same_shape, lookup, to_compute


def _k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return logprobs - ref_logprobs


def _k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    return 0.5 * (logprobs - ref_logprobs) ** 2


def _k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    logr = ref_logprobs - logprobs
    return torch.exp(logr) - logr - 1


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": _k1,
    "k2": _k2,
    "k3": _k3,
}


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1"
) -> torch.Tensor:
    """Per-token KL estimate of the policy from the reference: (B, T), (B, T) -> (B, T).

    ``kind`` is a key of :data:`KL_ESTIMATORS` ("k1", "k2", "k3"); unknown -> ValueError.
    Computed in float32 for bf16/fp16 inputs.  No masking: apply your mask to the result.
    """
    estimator = lookup(KL_ESTIMATORS, kind, "KL estimator")
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    logprobs, ref_logprobs = to_compute(logprobs, ref_logprobs)
    return estimator(logprobs, ref_logprobs)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last nonzero of each row of a (B, T) mask -> (B,) int64.

    Works with left padding, right padding and gaps.  A row with no nonzero raises
    ValueError naming the row(s).
    """
    m = as_bool_mask(mask)
    empty = (~m.any(dim=-1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"mask rows {empty} have no unmasked token")
    positions = torch.arange(1, m.shape[-1] + 1, device=m.device)
    return (positions * m).argmax(dim=-1)


def score_index(
    input_ids: torch.Tensor, mask: torch.Tensor, pad_token_id: int | None
) -> torch.Tensor:
    """Where a sequence classifier reads each row's score: (B, T), (B, T) -> (B,) int64.

    The last position of ``mask`` whose token is not ``pad_token_id`` — the token transformers'
    ``*ForSequenceClassification`` pools (the rightmost non-padding id), so a reward model scores
    the same here, in transformers and in TRL.  When padding is a real token (pad = EOS) its
    trailing copies are skipped as transformers does; a row made only of such tokens falls back
    to its last unmasked position.  ``pad_token_id`` None: the last unmasked position.
    """
    last = last_token_index(mask)
    if pad_token_id is None:
        return last
    scored = as_bool_mask(mask) & (input_ids != pad_token_id)
    positions = torch.arange(1, scored.shape[-1] + 1, device=scored.device)
    return torch.where(scored.any(dim=-1), (positions * scored).argmax(dim=-1), last)


def sequence_end_index(
    sequence_ids: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    pad_token_id: int | None = None,
) -> torch.Tensor:
    """Index of each sequence's last token in a padding-free (1, N) row whose tokens carry
    their sequence's number 0, 1, …, S−1 in order -> (S,) int64 (the packed
    :func:`last_token_index`).  With ``input_ids`` and ``pad_token_id``: the packed
    :func:`score_index` (trailing pad-id tokens of a sequence skipped)."""
    ids = sequence_ids.reshape(-1)
    end = torch.bincount(ids).cumsum(0) - 1
    if input_ids is None or pad_token_id is None:
        return end
    positions = torch.arange(ids.numel(), device=ids.device)
    kept = torch.where(input_ids.reshape(-1) != pad_token_id, positions, -1)
    last = torch.full_like(end, -1).scatter_reduce(0, ids, kept, "amax")
    return torch.where(last >= 0, last, end)


def shape_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    kind: str = "k1",
) -> torch.Tensor:
    """Token rewards r_t = -kl_coef * KL_t on the mask, plus the sequence score on the last
    unmasked token of each row (Ziegler et al. 2019; Ouyang et al. 2022, eq. 2).

    scores: (B,) sequence rewards; logprobs, ref_logprobs, mask: (B, T) over response
    tokens (the mask is the action mask; it may have left padding or gaps).
    Returns (B, T), zero outside the mask, float32 for bf16/fp16 inputs.  Not detached:
    call under ``torch.no_grad()``.  A row with an all-zero mask raises ValueError.
    """
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if scores.shape != logprobs.shape[:1]:
        raise ValueError(
            f"scores must be (B,) = {tuple(logprobs.shape[:1])}, got {tuple(scores.shape)}"
        )
    m = as_bool_mask(mask)
    last = last_token_index(m)
    kl = kl_estimate(logprobs, ref_logprobs, kind)
    rewards = torch.where(m, -kl_coef * kl, torch.zeros((), dtype=kl.dtype, device=kl.device))
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    return rewards.index_put((rows, last), scores.to(rewards.dtype), accumulate=True)


def place_step_rewards(
    token_rewards: torch.Tensor, step_rewards: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Move the step rewards of multi-turn trajectories from the last action, where
    :func:`shape_rewards` put them as part of the sequence score, to the actions that earned
    them: ``r_t − [t = last] · Σ_s step_rewards_s + step_rewards_t``.

    token_rewards: (B, T) from :func:`shape_rewards`, whose scores included each row's sum
    of ``step_rewards``; step_rewards: (B, T), each step's reward on the last action of the
    model turn it answered, 0 elsewhere; mask: (B, T) the action mask.  Each row's sum is
    unchanged (a sequence-level estimator sees the same reward); a per-token one (GAE,
    REINFORCE++) sees when each reward came.  A step reward off the mask raises ValueError.
    """
    check_same_shape(token_rewards=token_rewards, step_rewards=step_rewards, mask=mask)
    m = as_bool_mask(mask)
    off = ((step_rewards != 0) & ~m).any(dim=-1).nonzero().flatten().tolist()
    if off:
        raise ValueError(f"step_rewards rows {off} have a reward outside the action mask")
    step = step_rewards.to(token_rewards.dtype)
    rows = torch.arange(token_rewards.shape[0], device=token_rewards.device)
    moved = token_rewards.index_put((rows, last_token_index(m)), -step.sum(dim=-1), accumulate=True)
    return moved + step

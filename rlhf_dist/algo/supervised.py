"""Supervised losses: causal-LM SFT and the Bradley-Terry reward-model loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import check_same_shape, to_compute
from .logprobs import shifted_token_logps, token_logps
from .masked import masked_mean


def sft_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    shift: bool = True,
) -> torch.Tensor:
    """Mean next-token negative log-likelihood over non-ignored tokens (0-dim tensor).

    Hugging Face causal-LM convention, *shift inside*: logits (B, T, V) from the model on
    ``input_ids`` (B, T); ``labels = input_ids`` with prompt/padding positions set to
    ``ignore_index``; logits[:, t] is scored against labels[:, t + 1].  ``shift=False``:
    the labels are already the aligned targets, logits[:, t] scored against labels[:, t].
    With no scored token the loss is 0 (still differentiable, zero gradient), never NaN.
    Float32 for bf16 logits.
    """
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels {tuple(labels.shape)} must be logits.shape[:2] {tuple(logits.shape[:2])}"
        )
    score = shifted_token_logps if shift else token_logps
    logps, mask = score(logits, labels, ignore_index, chunk_size)
    return -masked_mean(logps, mask)


def _pair_margin(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    check_same_shape(chosen_scores=chosen, rejected_scores=rejected)
    chosen, rejected = to_compute(chosen, rejected)
    return chosen - rejected


def bradley_terry_loss(
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    margin: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Reward-model pairwise loss mean(-log sigmoid(r_c - r_r - m)) (Ouyang et al. 2022, eq. 1;
    the margin m is Llama-2's).  chosen_scores, rejected_scores: (B,); margin: (B,), a
    number or None.  Returns a 0-dim tensor (float32 for bf16 inputs)."""
    diff = _pair_margin(chosen_scores, rejected_scores)
    if margin is not None:
        diff = diff - (margin.to(diff.dtype) if torch.is_tensor(margin) else margin)
    return -F.logsigmoid(diff).mean()


@torch.no_grad()
def bradley_terry_metrics(
    chosen_scores: torch.Tensor, rejected_scores: torch.Tensor
) -> dict[str, float]:
    """accuracy (fraction with r_c > r_r strictly), margin_mean (mean r_c - r_r),
    chosen_mean, rejected_mean -- python floats.  Inputs (B,)."""
    diff = _pair_margin(chosen_scores, rejected_scores)
    return {
        "accuracy": (diff > 0).float().mean().item(),
        "margin_mean": diff.mean().item(),
        "chosen_mean": chosen_scores.float().mean().item(),
        "rejected_mean": rejected_scores.float().mean().item(),
    }

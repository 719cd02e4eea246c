"""The learners' forward: the log-probs (and entropy) of a rollout's action tokens under a
model -- the actor's behaviour log-probs, the reference's and the learner's new ones.  Next to
the model code, so that objectives/ and workers/ need nothing of rollout/ for it.  (Not named
``action_logprobs.py``: a submodule named like the function the package exports lazily would
replace it as the package attribute once imported directly.)"""

from __future__ import annotations

from typing import Any, Tuple, Union

import torch

from rlhf_dist.algo import entropy_from_logits, logprobs_from_logits
from rlhf_dist.models.causal_lm import causal_lm_logits
from rlhf_dist.protocol import Batch, BatchError


def first_action_column(action_mask: torch.Tensor) -> int:
    """The first column of ``action_mask`` ``(N, T−1)`` that any row acts in (``P − 1`` for
    a rollout batch; the last column when no row acts)."""
    acting = action_mask.any(0).nonzero()
    return int(acting[0]) if len(acting) else action_mask.shape[1] - 1


def action_logprobs(
    model: Any,
    batch: Batch,
    temperature: float = 1.0,
    return_entropy: bool = False,
    entropy_grad: bool = True,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Log-probs ``(N, T−1)`` of ``sequences[:, 1:]`` under ``model``, 0 off ``action_mask``.

    One forward with position ids from ``attention_mask`` (:func:`causal_lm_logits`; ``model``
    is an HF causal LM or anything called the same way, e.g. a DeepSpeed engine), logits
    divided by ``temperature``.  The actor's behaviour log-probs, the reference's log-probs and
    the learner's new log-probs all come from here.  Only the positions from the first action
    column on go through the LM head (transformers' ``logits_to_keep``): the prompt's columns
    are 0 anyway.  Not wrapped in ``no_grad`` (the learner needs gradients).
    ``return_entropy=True`` also returns the per-action entropy ``(N, T−1)`` (0 off the
    mask; ``entropy_grad=False``: a metric only, no gradient -- its backward is skipped).
    Float32 (float64 for a float64 model).
    """
    seq, mask = batch["sequences"], batch["action_mask"]
    if mask.shape != (seq.shape[0], seq.shape[1] - 1):
        raise BatchError(
            f"action_mask {tuple(mask.shape)} must be (N, T-1) for sequences {tuple(seq.shape)}"
        )
    first = first_action_column(mask)
    # positions first .. T-1; the last one predicts nothing
    logits = causal_lm_logits(
        model, seq, batch["attention_mask"], logits_to_keep=seq.shape[1] - first
    )[:, :-1]
    if temperature != 1.0:
        logits = logits / temperature
    keep = mask[:, first:].bool()
    logps = logprobs_from_logits(logits, seq[:, first + 1 :])
    logps = torch.where(keep, logps, torch.zeros((), dtype=logps.dtype, device=logps.device))
    if not return_entropy:
        return _before(logps, first)
    entropy = entropy_from_logits(logits if entropy_grad else logits.detach())
    return _before(logps, first), _before(
        torch.where(keep, entropy, torch.zeros_like(entropy)), first
    )


def _before(columns: torch.Tensor, first: int) -> torch.Tensor:
    """``columns`` ``(N, C)`` of action columns ``first ..`` back on the ``(N, T−1)`` grid."""
    return torch.nn.functional.pad(columns, (first, 0)) if first else columns

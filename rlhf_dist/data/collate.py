"""Collators: lists of tokenised examples → padded ``torch.long`` tensors.

* :class:`SFTCollator` — right-padded ``input_ids`` (B, T), ``attention_mask`` (B, T),
  ``labels`` (B, T) with ``-100`` on padding.
* :class:`PreferenceCollator` — ONE right-padded batch of 2B rows, chosen first:
  rows ``[chosen_1 … chosen_B, rejected_1 … rejected_B]`` as ``input_ids``,
  ``attention_mask``, ``labels`` (B, T each doubled to 2B), so one forward scores both.
* :class:`PromptCollator` — LEFT-padded ``input_ids`` and ``attention_mask`` (generation
  continues from the last column), plus ``prompts`` (list of str) and ``kinds`` when every
  example has a ``kind``.

``pad_to_multiple_of`` rounds T up.  torch is imported on first use, keeping
``import rlhf_dist.data`` cheap.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from .tokenization import IGNORE_INDEX


def padded_length(lengths: Sequence[int], pad_to_multiple_of: Optional[int] = None) -> int:
    """The longest length, rounded up to a multiple of ``pad_to_multiple_of``."""
    longest = max(lengths, default=0)
    m = pad_to_multiple_of or 1
    return -(-longest // m) * m


def pad(seqs: Sequence[Sequence[int]], value: int, side: str = "right",
        pad_to_multiple_of: Optional[int] = None):
    """(B, T) long tensor of ``seqs`` padded with ``value`` on ``side`` (``right``/``left``)."""
    import torch

    width = padded_length([len(s) for s in seqs], pad_to_multiple_of)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, seq in enumerate(seqs):
        if len(seq):
            row = torch.as_tensor(list(seq), dtype=torch.long)
            if side == "right":
                out[i, :len(seq)] = row
            else:
                out[i, width - len(seq):] = row
    return out


def _lm_batch(ids: List[Sequence[int]], labels: List[Sequence[int]], pad_token_id: int,
              multiple: Optional[int]) -> Dict[str, object]:
    return {
        "input_ids": pad(ids, pad_token_id, "right", multiple),
        "attention_mask": pad([[1] * len(s) for s in ids], 0, "right", multiple),
        "labels": pad(labels, IGNORE_INDEX, "right", multiple),
    }


class _Collator:
    """Holds the padding settings shared by the collators."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: Optional[int] = None):
        self.pad_token_id, self.pad_to_multiple_of = pad_token_id, pad_to_multiple_of


class SFTCollator(_Collator):
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` (−100 on padding)."""

    def __call__(self, examples: Sequence[dict]) -> Dict[str, object]:
        return _lm_batch([e["input_ids"] for e in examples], [e["labels"] for e in examples],
                         self.pad_token_id, self.pad_to_multiple_of)


class PreferenceCollator(_Collator):
    """2B rows ``[chosen_1..chosen_B, rejected_1..rejected_B]``: ``input_ids``,
    ``attention_mask``, ``labels``; split the model's output with ``out[:B]``, ``out[B:]``."""

    def __call__(self, examples: Sequence[dict]) -> Dict[str, object]:
        ids = [e["chosen_input_ids"] for e in examples] + [e["rejected_input_ids"] for e in examples]
        labels = [e["chosen_labels"] for e in examples] + [e["rejected_labels"] for e in examples]
        return _lm_batch(ids, labels, self.pad_token_id, self.pad_to_multiple_of)


class PromptCollator(_Collator):
    """Left-padded ``input_ids`` and ``attention_mask`` for generation, plus ``prompts``."""

    def __call__(self, examples: Sequence[dict]) -> Dict[str, object]:
        ids = [e["input_ids"] for e in examples]
        batch: Dict[str, object] = {
            "input_ids": pad(ids, self.pad_token_id, "left", self.pad_to_multiple_of),
            "attention_mask": pad([[1] * len(s) for s in ids], 0, "left", self.pad_to_multiple_of),
            "prompts": [e.get("prompt", "") for e in examples],
        }
        if examples and all("kind" in e for e in examples):
            batch["kinds"] = [e["kind"] for e in examples]
        return batch

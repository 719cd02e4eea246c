"""Padding-free batches (``train.padding_free``): a micro-batch's sequences concatenated into
ONE row, no padding and no attention mask.

Keys, each ``(1, N)`` with N the micro-batch's real tokens:

* ``input_ids`` — the sequences one after the other;
* ``position_ids`` — restarting at 0 with each sequence.  With no attention mask, transformers
  reads the sequence boundaries from them: flash-attention-2 runs the sequences as varlen
  sequences (no padding is ever computed), eager and sdpa build a block-diagonal causal mask
  (``masking_utils.find_packed_sequence_indices``), so no token attends across a boundary;
* ``labels`` — each example's labels, with the first token of every sequence set to −100
  (with the usual shift it would be predicted from the previous sequence's last token);
* ``sequence_ids`` — 0, 1, … : which sequence each token belongs to.

The row is transformers' ``DataCollatorWithFlattening`` (with ``return_seq_idx``); this
module checks the sequences first and adds the pair order.

:class:`PackedLMCollator` packs SFT / pretraining examples; :class:`PackedPairCollator` packs
preference pairs as the 2B sequences ``chosen_1 … chosen_B, rejected_1 … rejected_B`` (the
padded layout's row order), for the reward model and ``dpo.layout=packed``.  The losses are
those of the padded batches up to float rounding (``tests/data/test_data_packing.py``).
"""

from __future__ import annotations

import functools
from typing import Dict, Sequence

from .tokenization import IGNORE_INDEX


def pack(ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]) -> Dict[str, object]:
    """One ``(1, N)`` row of ``ids`` with its ``position_ids``, ``labels`` (−100 at each
    sequence's first token) and ``sequence_ids`` (see the module): transformers'
    ``DataCollatorWithFlattening``, which would silently drop an empty sequence (and so
    misalign a pair), after checking every sequence here."""
    if not ids:
        raise ValueError("pack: no sequences")
    for k, (seq, lab) in enumerate(zip(ids, labels)):
        if len(seq) == 0:
            raise ValueError(f"pack: sequence {k} is empty; every sequence needs a token")
        if len(lab) != len(seq):
            raise ValueError(f"pack: sequence {k} has {len(seq)} tokens but {len(lab)} labels")
    row = _flattening()(
        [{"input_ids": list(seq), "labels": list(lab)} for seq, lab in zip(ids, labels)]
    )
    return {
        "input_ids": row["input_ids"],
        "position_ids": row["position_ids"],
        "labels": row["labels"],
        "sequence_ids": row["seq_idx"].long(),
    }


@functools.lru_cache(maxsize=1)
def _flattening():
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(
        return_position_ids=True, separator_id=IGNORE_INDEX, return_seq_idx=True
    )


class PackedLMCollator:
    """SFT / pretraining examples -> one packed row (the keys of :func:`pack`).  Takes the
    padded collators' arguments, though nothing is padded."""

    def __init__(self, pad_token_id: int = 0, pad_to_multiple_of=None):
        del pad_token_id, pad_to_multiple_of

    def __call__(self, examples: Sequence[dict]) -> Dict[str, object]:
        return pack([e["input_ids"] for e in examples], [e["labels"] for e in examples])


class PackedPairCollator(PackedLMCollator):
    """B preference pairs -> one packed row of the 2B sequences, chosen first."""

    @staticmethod
    def rows(chosen, rejected):
        """One value per response ``(B,)`` each -> a per-row tensor of this batch ``(1, 2B)``."""
        import torch

        return torch.cat([chosen, rejected])[None]

    def __call__(self, examples: Sequence[dict]) -> Dict[str, object]:
        return pack(
            [e["chosen_input_ids"] for e in examples] + [e["rejected_input_ids"] for e in examples],
            [e["chosen_labels"] for e in examples] + [e["rejected_labels"] for e in examples],
        )


def is_packed(batch) -> bool:
    """Whether a collated batch is padding-free (it carries ``sequence_ids``)."""
    return "sequence_ids" in batch

"""Preference-pair layouts: how a batch of pairs (collated by ``data.PAIR_COLLATORS`` of the
same name) is run through a causal LM and read back as the token log-probs of each chosen and
rejected response.

* ``padded`` — 2B rows, chosen first (:class:`~rlhf_dist.data.PreferenceCollator`): every
  pair's prompt is computed twice; works with any attention implementation.
* ``packed`` — ONE row of the 2B sequences, chosen first, no padding and no mask
  (:class:`~rlhf_dist.data.PackedPairCollator`, ``train.padding_free``): position ids that
  restart at each sequence keep them apart (flash-attention-2 varlen, or a block-diagonal
  mask under eager/sdpa).
* ``shared_prompt`` — B rows ``prompt + chosen + rejected`` with a 4D attention mask
  (:class:`~rlhf_dist.data.SharedPromptCollator`): the prompt is computed once.  Needs an
  attention that takes a 4D mask (eager, sdpa; not flash-attention-2).

All give the same log-probs up to float rounding.  Only the positions whose logits score a
response token go through the LM head (``algo.scored_columns`` as transformers'
``logits_to_keep``): not the prompt's, not the padding's.  ``rows``/``split_rows`` carry one value
per response in a per-row tensor of the layout's batch (how the Ray reference group hands
reference log-probs to the actor group, and KTO's batches their labels); ``rows`` is the
collator's own (:mod:`rlhf_dist.data.collate`), so batch and layout agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch

from rlhf_dist.algo import masked_mean, masked_sequence_logps, scored_columns, token_logps
from rlhf_dist.data import (
    PackedPairCollator,
    PreferenceCollator,
    SharedPromptCollator,
    shared_prompt_attention_mask,
)
from rlhf_dist.data.collate import PROMPT_SEGMENT
from rlhf_dist.models import causal_lm_logits, label_logits, model_dtype

Pair = Tuple[torch.Tensor, torch.Tensor]


@dataclass
class PairLogps:
    """Token log-probs ``(B, K)`` of the chosen and the rejected responses (0 where unscored)
    with their masks, over the K scored columns of the layout's batch."""

    chosen: torch.Tensor
    chosen_mask: torch.Tensor
    rejected: torch.Tensor
    rejected_mask: torch.Tensor

    def sequences(self, average: bool = False) -> Pair:
        """(chosen, rejected) per-response sums, or means over tokens with ``average``."""
        return (
            masked_sequence_logps(self.chosen, self.chosen_mask, average),
            masked_sequence_logps(self.rejected, self.rejected_mask, average),
        )

    def chosen_nll(self) -> torch.Tensor:
        """Mean negative log-likelihood of the chosen responses' tokens."""
        return -masked_mean(self.chosen, self.chosen_mask)


class PaddedPairs:
    """2B rows ``[chosen_1..chosen_B, rejected_1..rejected_B]``."""

    def logps(self, model, batch: Dict[str, torch.Tensor]) -> PairLogps:
        logits, targets, _ = label_logits(
            model, batch["input_ids"], batch["attention_mask"], None, batch["labels"]
        )
        logps, mask = token_logps(logits, targets)
        half = logps.shape[0] // 2
        return PairLogps(logps[:half], mask[:half], logps[half:], mask[half:])

    rows = staticmethod(PreferenceCollator.rows)  # (2B,)

    def split_rows(self, values: torch.Tensor) -> Pair:
        half = values.shape[0] // 2
        return values[:half], values[half:]

    def num_pairs(self, batch) -> int:
        return int(batch["input_ids"].shape[0]) // 2

    def num_tokens(self, batch) -> int:
        return int(batch["attention_mask"].sum())


class PackedPairs:
    """One row of the 2B sequences ``chosen_1..chosen_B, rejected_1..rejected_B``; each
    response's log-probs are read back as a row of a (2B, K) masked table over the K
    scored positions."""

    def logps(self, model, batch: Dict[str, torch.Tensor]) -> PairLogps:
        logits, targets, kept = label_logits(
            model, batch["input_ids"], None, batch["position_ids"], batch["labels"]
        )
        logps, mask = token_logps(logits, targets)  # (1, K): the K scored tokens
        owner = batch["sequence_ids"][:, 1:][:, kept]  # the sequence of each scored token
        sequences = torch.arange(2 * self.num_pairs(batch), device=owner.device)[:, None]
        masks = mask & (owner == sequences)  # (2B, K): row s scores sequence s's tokens
        table = logps * masks
        half = masks.shape[0] // 2
        return PairLogps(table[:half], masks[:half], table[half:], masks[half:])

    rows = staticmethod(PackedPairCollator.rows)  # (1, 2B): the batch's one row

    def split_rows(self, values: torch.Tensor) -> Pair:
        half = values.shape[1] // 2
        return values[0, :half], values[0, half:]

    def num_pairs(self, batch) -> int:
        return (int(batch["sequence_ids"][0, -1]) + 1) // 2

    def num_tokens(self, batch) -> int:
        return int(batch["input_ids"].numel())


class SharedPromptPairs:
    """B rows ``prompt + chosen + rejected``; a 4D mask hides the chosen tokens from the
    rejected ones (``config`` refuses it with flash-attention-2)."""

    def logps(self, model, batch: Dict[str, torch.Tensor]) -> PairLogps:
        _check_no_sliding_window(model, batch["input_ids"].shape[1])
        mask = shared_prompt_attention_mask(batch["segment_ids"], model_dtype(model))
        chosen, rejected = batch["chosen_targets"], batch["rejected_targets"]
        kept = scored_columns(chosen, rejected)
        logits = causal_lm_logits(
            model, batch["input_ids"], mask, batch["position_ids"], logits_to_keep=kept
        )
        return PairLogps(
            *token_logps(logits, chosen[:, kept]), *token_logps(logits, rejected[:, kept])
        )

    rows = staticmethod(SharedPromptCollator.rows)  # (B, 2)

    def split_rows(self, values: torch.Tensor) -> Pair:
        return values[:, 0], values[:, 1]

    def num_pairs(self, batch) -> int:
        return int(batch["input_ids"].shape[0])

    def num_tokens(self, batch) -> int:
        """Tokens of the pairs as texts (the prompt counted twice), as the padded layout
        and other trainers count them: throughput compares like with like."""
        return int(batch["attention_mask"].sum() + (batch["segment_ids"] == PROMPT_SEGMENT).sum())


def _check_no_sliding_window(model, length: int) -> None:
    """A custom 4D mask replaces the one transformers would build, sliding window included:
    rows longer than a model's window would see more than the padded layout lets them."""
    config = getattr(getattr(model, "module", model), "config", None)
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True) and length > window:
        raise ValueError(
            f"dpo.layout=shared_prompt: a {length}-token row exceeds the model's "
            f"sliding window ({window}), which a 4D mask does not apply; use "
            f"dpo.layout=padded"
        )


PAIR_LAYOUTS = {
    "padded": PaddedPairs(),
    "shared_prompt": SharedPromptPairs(),
    "packed": PackedPairs(),
}

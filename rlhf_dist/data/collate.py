"""Collators: lists of tokenised examples → padded ``torch.long`` tensors.

* :class:`SFTCollator` — right-padded ``input_ids`` (B, T), ``attention_mask`` (B, T),
  ``labels`` (B, T) with ``-100`` on padding.
* :class:`PreferenceCollator` — ONE right-padded batch of 2B rows, chosen first:
  rows ``[chosen_1 … chosen_B, rejected_1 … rejected_B]`` as ``input_ids``,
  ``attention_mask``, ``labels`` (B, T each doubled to 2B), so one forward scores both.
* :class:`SharedPromptCollator` — B rows ``prompt + chosen + rejected``, one per pair, so
  the prompt is computed once; :func:`shared_prompt_attention_mask` gives its 4D mask.
* :class:`~.packing.PackedLMCollator` / :class:`~.packing.PackedPairCollator` — no padding:
  a micro-batch's sequences in one row (``train.padding_free``, :mod:`.packing`).
* :class:`UnpairedCollator` — KTO: B unpaired answers as B pairs of a pair layout, each row's
  own answer and the next row's answer after this row's prompt (the mismatched pairs whose
  log-ratios estimate KL), plus ``desirable`` and ``kto_weight`` per row.
* :class:`PromptCollator` — LEFT-padded ``input_ids`` and ``attention_mask`` (generation
  continues from the last column), plus ``prompts`` (list of str) and ``kinds`` when every
  example has a ``kind``.

``pad_to_multiple_of`` rounds T up.  torch is imported on first use, keeping
``import rlhf_dist.data`` cheap.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from .packing import PackedLMCollator, PackedPairCollator
from .tokenization import IGNORE_INDEX, join_response


def padded_length(lengths: Sequence[int], pad_to_multiple_of: Optional[int] = None) -> int:
    """The longest length, rounded up to a multiple of ``pad_to_multiple_of``."""
    longest = max(lengths, default=0)
    m = pad_to_multiple_of or 1
    return -(-longest // m) * m


def pad(
    seqs: Sequence[Sequence[int]],
    value: int,
    side: str = "right",
    pad_to_multiple_of: Optional[int] = None,
):
    """(B, T) long tensor of ``seqs`` padded with ``value`` on ``side`` (``right``/``left``)."""
    import torch

    width = padded_length([len(s) for s in seqs], pad_to_multiple_of)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for i, seq in enumerate(seqs):
        if len(seq):
            row = torch.as_tensor(list(seq), dtype=torch.long)
            if side == "right":
                out[i, : len(seq)] = row
            else:
                out[i, width - len(seq) :] = row
    return out


def _lm_batch(
    ids: List[Sequence[int]],
    labels: List[Sequence[int]],
    pad_token_id: int,
    multiple: Optional[int],
) -> Dict[str, object]:
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
        return _lm_batch(
            [e["input_ids"] for e in examples],
            [e["labels"] for e in examples],
            self.pad_token_id,
            self.pad_to_multiple_of,
        )


class PreferenceCollator(_Collator):
    """2B rows ``[chosen_1..chosen_B, rejected_1..rejected_B]``: ``input_ids``,
    ``attention_mask``, ``labels``; split the model's output with ``out[:B]``, ``out[B:]``."""

    @staticmethod
    def rows(chosen, rejected):
        """One value per response ``(B,)`` each -> a per-row tensor of this batch ``(2B,)``."""
        import torch

        return torch.cat([chosen, rejected])

    def __call__(self, examples: Sequence[dict]) -> Dict[str, object]:
        ids = [e["chosen_input_ids"] for e in examples] + [
            e["rejected_input_ids"] for e in examples
        ]
        labels = [e["chosen_labels"] for e in examples] + [e["rejected_labels"] for e in examples]
        return _lm_batch(ids, labels, self.pad_token_id, self.pad_to_multiple_of)


# segment ids of a shared-prompt row
PAD_SEGMENT, PROMPT_SEGMENT, CHOSEN_SEGMENT, REJECTED_SEGMENT = 0, 1, 2, 3


def _shared_prompt_row(example: dict) -> Dict[str, List[int]]:
    """One pair as one row.  Rejected positions restart at the prompt's end; the prompt's
    last position predicts the first token of both responses."""
    n, chosen, rejected = (
        example["prompt_len"],
        example["chosen_input_ids"],
        example["rejected_input_ids"],
    )
    c, r = len(chosen) - n, len(rejected) - n
    length = n + c + r
    chosen_targets, rejected_targets = [IGNORE_INDEX] * length, [IGNORE_INDEX] * length
    for t in range(max(n, 1), n + c):  # token t is predicted from position t - 1
        chosen_targets[t - 1] = example["chosen_labels"][t]
    for j in range(r):  # rejected token n + j sits at row position n + c + j
        source = n - 1 if j == 0 else n + c + j - 1
        if source >= 0:
            rejected_targets[source] = example["rejected_labels"][n + j]
    return {
        "input_ids": list(chosen) + list(rejected[n:]),
        "position_ids": list(range(n + c)) + list(range(n, n + r)),
        "segment_ids": [PROMPT_SEGMENT] * n + [CHOSEN_SEGMENT] * c + [REJECTED_SEGMENT] * r,
        "chosen_targets": chosen_targets,
        "rejected_targets": rejected_targets,
    }


class SharedPromptCollator(_Collator):
    """B right-padded rows ``prompt + chosen + rejected``: ``input_ids``, ``attention_mask``
    (real tokens), ``position_ids``, ``segment_ids`` (0 pad, 1 prompt, 2 chosen, 3 rejected)
    and ``chosen_targets`` / ``rejected_targets`` (the token each position predicts, −100
    elsewhere: *aligned*, no shift).  Same log-probs as :class:`PreferenceCollator`'s rows
    with the prompt's forward done once per pair instead of twice."""

    @staticmethod
    def rows(chosen, rejected):
        """One value per response ``(B,)`` each -> a per-row tensor of this batch ``(B, 2)``."""
        import torch

        return torch.stack([chosen, rejected], dim=1)

    def __call__(self, examples: Sequence[dict]) -> Dict[str, object]:
        rows = [_shared_prompt_row(e) for e in examples]
        m = self.pad_to_multiple_of

        def column(key: str, value: int):
            return pad([row[key] for row in rows], value, "right", m)

        return {
            "input_ids": column("input_ids", self.pad_token_id),
            "attention_mask": pad([[1] * len(row["input_ids"]) for row in rows], 0, "right", m),
            "position_ids": column("position_ids", 0),
            "segment_ids": column("segment_ids", PAD_SEGMENT),
            "chosen_targets": column("chosen_targets", IGNORE_INDEX),
            "rejected_targets": column("rejected_targets", IGNORE_INDEX),
        }


def shared_prompt_attention_mask(segment_ids, dtype):
    """(B, L) segment ids -> (B, 1, L, L) additive mask: causal, padding hidden, rejected
    tokens never see chosen ones; a padding position sees itself (no empty softmax row)."""
    import torch

    length = segment_ids.shape[1]
    query, key = segment_ids.unsqueeze(2), segment_ids.unsqueeze(1)
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = (
        causal & (key != PAD_SEGMENT) & ~((query == REJECTED_SEGMENT) & (key == CHOSEN_SEGMENT))
    )
    allowed |= torch.eye(length, dtype=torch.bool, device=segment_ids.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


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


def kl_pairs(examples: Sequence[dict], eos_id: int, max_length: int) -> List[dict]:
    """KTO's micro-batch as preference-shaped examples: pair i is (x_i, y_i) and the
    mismatched (x_i, y_{(i+1) mod B}) -- prompt i with the next row's answer (Ethayarajh et al.
    2024, sec. 4.1: the shifted pairs whose log-ratios estimate KL(π‖π_ref), z0).  A one-row
    batch has no other answer: its own is used."""
    pairs = []
    for i, example in enumerate(examples):
        other = examples[(i + 1) % len(examples)]
        prompt = example["input_ids"][: example["prompt_len"]]
        kl_ids, kl_labels = join_response(prompt, other["completion_ids"], eos_id, max_length)
        pairs.append(
            {
                "prompt_len": example["prompt_len"],
                "chosen_input_ids": example["input_ids"],
                "chosen_labels": example["labels"],
                "rejected_input_ids": kl_ids,
                "rejected_labels": kl_labels,
            }
        )
    return pairs


class UnpairedCollator:
    """KTO: B unpaired examples -> the batch of a pair collator (``pairs``, one of
    :data:`PAIR_COLLATORS`) over :func:`kl_pairs` -- "chosen" the rows' own answers, "rejected"
    the mismatched ones -- plus ``desirable`` (bool) and ``kto_weight`` (λ_D or λ_U of the row,
    from ``weights``) in the pair batch's row format (``pairs.rows``; the mismatched side
    repeats them)."""

    def __init__(
        self,
        pairs: _Collator,
        eos_id: int,
        max_length: int,
        weights: Tuple[float, float] = (1.0, 1.0),
    ):
        self.pairs, self.eos_id, self.max_length = pairs, eos_id, max_length
        self.weights = weights

    def __call__(self, examples: Sequence[dict]) -> Dict[str, object]:
        import torch

        batch = self.pairs(kl_pairs(examples, self.eos_id, self.max_length))
        desirable = torch.tensor([bool(e["desirable"]) for e in examples])
        weight = torch.where(desirable, self.weights[0], self.weights[1]).float()
        batch["desirable"] = self.pairs.rows(desirable, desirable)
        batch["kto_weight"] = self.pairs.rows(weight, weight)
        return batch


# The collator of each DPO/RM pair layout (``dpo.layout``), by name; the model side of each
# layout is ``rlhf_dist.objectives.PAIR_LAYOUTS`` of the same name.
PAIR_COLLATORS = {
    "padded": PreferenceCollator,
    "shared_prompt": SharedPromptCollator,
    "packed": PackedPairCollator,
}


def lm_collator(pad_token_id: int, padding_free: bool = False) -> _Collator:
    """SFT / pretraining batches: right-padded rows, or one packed row (``train.padding_free``)."""
    return (PackedLMCollator if padding_free else SFTCollator)(pad_token_id)

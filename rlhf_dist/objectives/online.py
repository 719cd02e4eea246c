"""Online DPO's pairs: sampled answers, ranked by a scorer, back into the DPO job's batches.

Each prompt's ``n`` answers (consecutive rows of the rollout's experience) give one pair: the
best and the worst by score (:func:`~rlhf_dist.algo.best_worst_pairs`; a tie gives none).  A
pair is a preference example of the data's format (``chosen_input_ids`` / ``chosen_labels`` /
``rejected_*`` / ``prompt_len``) read off the rollout grid (:mod:`rlhf_dist.rollout.generate`):
the prompt is the row's real tokens in the prompt columns, the answer the real tokens after
them, labelled where ``action_mask`` marks a sampled token (a multi-turn trajectory's
observations stay ``-100``).  The pairs are then collated in ``dpo.layout`` like any pairs, with
``pair_weight`` rows (:func:`~rlhf_dist.algo.online_pair_weights`: a tie weighs 0), so the
actor's DPO update and the reference's rows are the offline job's.
"""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import torch

from rlhf_dist.algo import online_pair_weights
from rlhf_dist.data import IGNORE_INDEX
from rlhf_dist.objectives.pairs import PAIR_LAYOUTS
from rlhf_dist.protocol import Batch


def sampled_answer(experience: Batch, row: int) -> Tuple[List[int], List[int], int]:
    """``(input_ids, labels, prompt_len)`` of one experience row, padding dropped: token
    ``t`` is labelled when ``action_mask[t - 1]`` (position ``t - 1`` scores token ``t``)."""
    real = experience["attention_mask"][row].bool()
    sequence = experience["sequences"][row]
    trained = torch.zeros_like(real)
    trained[1:] = experience["action_mask"][row].bool()
    labels = torch.where(trained & real, sequence, torch.full_like(sequence, IGNORE_INDEX))
    prompt_len = int(real[: experience.meta["prompt_length"]].sum())
    return sequence[real].tolist(), labels[real].tolist(), prompt_len


def sampled_pair_examples(
    experience: Batch, chosen: Sequence[int], rejected: Sequence[int]
) -> List[dict]:
    """The preference examples of rows ``chosen[i]`` ≻ ``rejected[i]`` (same prompt)."""
    examples = []
    for good, bad in zip(chosen, rejected):
        c_ids, c_labels, prompt_len = sampled_answer(experience, int(good))
        r_ids, r_labels, r_prompt_len = sampled_answer(experience, int(bad))
        if c_ids[:prompt_len] != r_ids[:r_prompt_len]:
            raise ValueError(
                f"experience rows {int(good)} and {int(bad)} answer different "
                "prompts; a pair's answers must share theirs"
            )
        examples.append(
            {
                "chosen_input_ids": c_ids,
                "chosen_labels": c_labels,
                "rejected_input_ids": r_ids,
                "rejected_labels": r_labels,
                "prompt_len": prompt_len,
            }
        )
    return examples


def pair_micro_batches(
    examples: Sequence[dict],
    decisive: torch.Tensor,
    step_size: int,
    rank_slices: Callable[[List[int], int], List[List[int]]],
    world: int,
    collate: Callable,
    layout: str,
) -> List[List[List[Batch]]]:
    """``[step][rank]`` -> that rank's micro-batches of one optimiser step: the pairs in steps of
    ``step_size`` (in order), each step's pairs split by ``rank_slices(indices, rank)``, each
    micro-batch collated with its ``pair_weight`` rows."""
    weights = online_pair_weights(decisive, step_size)
    rows = PAIR_LAYOUTS[layout].rows
    steps = []
    for start in range(0, len(examples), step_size):
        indices = list(range(start, start + step_size))
        per_rank = []
        for rank in range(world):
            micro = []
            for chunk in rank_slices(indices, rank):
                w = weights[chunk]
                micro.append(
                    Batch.from_dict(collate([examples[i] for i in chunk])).with_(
                        pair_weight=rows(w, w)
                    )
                )
            per_rank.append(micro)
        steps.append(per_rank)
    return steps

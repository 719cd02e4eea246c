"""Online DPO's pairs read off a hand-built rollout grid: prompt without its left padding, the
answer labelled where it was sampled (through the first EOS), ties at weight 0, and each
rank's micro-batches of a step."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.algo import best_worst_pairs
from rlhf_dist.data import PAIR_COLLATORS
from rlhf_dist.objectives.online import pair_micro_batches, sampled_pair_examples
from rlhf_dist.rollout.generate import rollout_batch
from rlhf_dist.trainers.batches import rank_micro_batches

X, EOS, PAD = -100, 2, 0


def _experience():
    """2 prompts x 2 answers: prompt A = [4, 5] (one pad on the left), B = [6, 7, 8]."""
    prompts = torch.tensor([[PAD, 4, 5]] * 2 + [[6, 7, 8]] * 2)
    prompt_mask = torch.tensor([[0, 1, 1]] * 2 + [[1, 1, 1]] * 2)
    answers = torch.tensor(
        [
            [9, EOS, 10],  # A1: stops at EOS (10 is cut)
            [11, 12, 13],  # A2: truncated, no EOS
            [14, EOS, 3],  # B1
            [15, 16, EOS],
        ]
    )  # B2
    return rollout_batch(torch.cat([prompts, answers], 1), prompt_mask, [EOS], PAD, 2)


def test_pairs_of_the_best_and_worst_answer_by_hand():
    experience = _experience()
    chosen, rejected, decisive = best_worst_pairs(torch.tensor([1.0, 0.0, 0.5, 0.5]), 2)
    assert (chosen.tolist(), rejected.tolist(), decisive.tolist()) == (
        [0, 2],
        [1, 2],
        [True, False],
    )
    a, b = sampled_pair_examples(experience, chosen.tolist(), rejected.tolist())
    assert a == {
        "chosen_input_ids": [4, 5, 9, EOS],
        "chosen_labels": [X, X, 9, EOS],
        "rejected_input_ids": [4, 5, 11, 12, 13],
        "rejected_labels": [X, X, 11, 12, 13],
        "prompt_len": 2,
    }
    assert b["chosen_input_ids"] == b["rejected_input_ids"] == [6, 7, 8, 14, EOS]  # a tie
    with pytest.raises(ValueError, match="rows 0 and 2 answer different prompts"):
        sampled_pair_examples(experience, [0], [2])


@pytest.mark.parametrize("world", [1, 2])  # 1 rank x 2 micro-batches, or 2 ranks x 1
def test_each_rank_gets_its_slice_of_a_step_with_the_weights(world):
    experience = _experience()
    examples = sampled_pair_examples(experience, [0, 2, 0, 2], [1, 2, 1, 2])
    decisive = torch.tensor([True, False, True, True])
    steps = pair_micro_batches(
        examples,
        decisive,
        4,
        lambda idx, rank: rank_micro_batches(idx, rank, world, 2),
        world,
        PAIR_COLLATORS["padded"](PAD),
        "padded",
    )
    assert len(steps) == 1 and [len(rank) for rank in steps[0]] == [2 // world] * world
    weights = torch.cat([m["pair_weight"][: len(m) // 2] for rank in steps[0] for m in rank])
    # 3 decisive pairs in the step of 4: 4/3 each, the tie 0
    assert weights.tolist() == pytest.approx([4 / 3, 0.0, 4 / 3, 4 / 3])
    first = steps[0][0][0]
    assert first["input_ids"][0].tolist()[:4] == [4, 5, 9, EOS]

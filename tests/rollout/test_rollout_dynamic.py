"""DAPO's dynamic sampling: which groups are kept over the rounds, and the joined batch."""

import pytest
import torch

from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.dynamic import choose_groups, gather_groups

T, F = True, False


def test_informative_groups_first_in_generation_order_then_filled():
    # round 0: groups 1, 3 informative; round 1: group 0; want 3 -> exactly those three
    masks = [torch.tensor([F, T, F, T]), torch.tensor([T, F, F, F])]
    assert choose_groups(masks, 3) == ([(0, 1), (0, 3), (1, 0)], 0)
    # want 2: the first two informative ones only, the later round's is not needed
    assert choose_groups(masks, 2) == ([(0, 1), (0, 3)], 0)
    # want 5 with 3 informative: the first 2 uninformative (0, 0), (0, 2) fill the batch
    assert choose_groups(masks, 5) == ([(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)], 2)
    with pytest.raises(ValueError, match="8 groups generated, 9 wanted"):
        choose_groups(masks, 9)


def _round(prompt_len: int, seq_len: int, first_id: int, groups: int, n: int) -> Batch:
    """Rows whose every token is its row id (first_id + row), prompt width ``prompt_len``."""
    rows = groups * n
    ids = torch.arange(first_id, first_id + rows)[:, None].expand(rows, seq_len).clone()
    return Batch(
        {
            "sequences": ids,
            "attention_mask": torch.ones(rows, seq_len),
            "old_logprobs": ids[:, 1:].float(),
            "scores": ids[:, 0].float(),
        },
        {"prompt_length": prompt_len},
    )


def test_gather_keeps_whole_groups_in_order_and_realigns_the_prompts():
    n = 2
    rounds = [_round(3, 6, 100, 3, n), _round(5, 7, 200, 2, n)]  # different widths
    batch = gather_groups(rounds, [(0, 2), (1, 0), (1, 1)], n, pad_token_id=0)
    assert batch["scores"].tolist() == [104, 105, 200, 201, 202, 203]
    assert batch.meta["prompt_length"] == 5
    # round 0's rows (width 6) are left-padded by 2 so every prompt ends at column 5, then
    # round 1's (width 7) right-padded to the common 8
    assert batch["sequences"].shape == (6, 8)
    assert batch["sequences"][0].tolist() == [0, 0] + [104] * 6
    assert batch["attention_mask"][0].tolist() == [0, 0] + [1] * 6
    assert batch["sequences"][2].tolist() == [200] * 7 + [0]
    assert batch["attention_mask"][2].tolist() == [1] * 7 + [0]

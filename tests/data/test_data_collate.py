"""Collators: exact padded tensors for hand-built batches."""

import torch

from rlhf_dist.data import PreferenceCollator, PromptCollator, SFTCollator, pad

PAD, X = 0, -100
SFT_BATCH = [
    {"input_ids": [5, 6, 7], "labels": [X, 6, 7], "prompt_len": 1},
    {"input_ids": [8, 9, 10, 11, 12], "labels": [X, X, 10, 11, 12], "prompt_len": 2},
]


def t(rows):
    return torch.tensor(rows, dtype=torch.long)


def test_sft_right_pads_with_ignored_labels():
    batch = SFTCollator(PAD)(SFT_BATCH)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert torch.equal(batch["input_ids"], t([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]]))
    assert torch.equal(batch["attention_mask"], t([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    assert torch.equal(batch["labels"], t([[X, 6, 7, X, X], [X, X, 10, 11, 12]]))
    assert all(v.dtype == torch.long for v in batch.values())


def test_pad_to_multiple_of():
    batch = SFTCollator(PAD, pad_to_multiple_of=4)(SFT_BATCH)
    assert batch["input_ids"].shape == (2, 8)
    assert torch.equal(batch["labels"][0], t([X, 6, 7, X, X, X, X, X]))
    assert torch.equal(batch["attention_mask"].sum(1), t([3, 5]))


def test_non_zero_pad_id():
    batch = SFTCollator(99)(SFT_BATCH)
    assert torch.equal(batch["input_ids"][0], t([5, 6, 7, 99, 99]))
    assert torch.equal(batch["attention_mask"][0], t([1, 1, 1, 0, 0]))


def test_preference_one_batch_chosen_then_rejected():
    examples = [
        {
            "chosen_input_ids": [5, 6],
            "chosen_labels": [X, 6],
            "rejected_input_ids": [5, 7, 8],
            "rejected_labels": [X, 7, 8],
            "prompt_len": 1,
        },
        {
            "chosen_input_ids": [9, 10, 11, 12],
            "chosen_labels": [X, X, 11, 12],
            "rejected_input_ids": [9, 10, 13],
            "rejected_labels": [X, X, 13],
            "prompt_len": 2,
        },
    ]
    batch = PreferenceCollator(PAD)(examples)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert torch.equal(
        batch["input_ids"], t([[5, 6, 0, 0], [9, 10, 11, 12], [5, 7, 8, 0], [9, 10, 13, 0]])
    )
    assert torch.equal(
        batch["attention_mask"], t([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0]])
    )
    assert torch.equal(
        batch["labels"], t([[X, 6, X, X], [X, X, 11, 12], [X, 7, 8, X], [X, X, 13, X]])
    )


def test_prompts_left_padded_for_generation():
    examples = [
        {"input_ids": [5, 6, 7], "prompt": "abc", "kind": "harmful"},
        {"input_ids": [8], "prompt": "d", "kind": "benign"},
    ]
    batch = PromptCollator(PAD)(examples)
    assert torch.equal(batch["input_ids"], t([[5, 6, 7], [0, 0, 8]]))
    assert torch.equal(batch["attention_mask"], t([[1, 1, 1], [0, 0, 1]]))
    assert batch["prompts"] == ["abc", "d"] and batch["kinds"] == ["harmful", "benign"]
    no_kind = PromptCollator(PAD, pad_to_multiple_of=4)([{"input_ids": [8], "prompt": "d"}])
    assert "kinds" not in no_kind
    assert torch.equal(no_kind["input_ids"], t([[0, 0, 0, 8]]))


def test_pad_helper():
    assert torch.equal(pad([[1], [2, 3]], -1, "left"), t([[-1, 1], [2, 3]]))
    assert pad([[], []], 0).shape == (2, 0)

"""Unpaired (KTO) rows: {prompt, completion, label} and preference pairs split in two, the bad
rows named with their field, and the collator's mismatched pairs with hand-known ids."""

import pytest
import torch

from data_helpers import cfg, ids, write_rows
from rlhf_dist.data import (
    PAIR_COLLATORS,
    DataError,
    UnpairedCollator,
    build_unpaired_dataset,
    kl_pairs,
)
from rlhf_dist.toy import ToyTask, is_refusal

X = -100
EOS = 2  # the word tokenizer's </s>


def _rows(tmp_path, rows):
    return str(write_rows(tmp_path / "rows.jsonl", rows))


def test_unpaired_rows_are_examples_with_their_label(tmp_path, word_tok):
    path = _rows(
        tmp_path,
        [
            {"prompt": "Q p1 A:", "completion": "r1 r2", "label": True},
            {"prompt": "Q p2 p3 A:", "completion": "r3", "label": False},
        ],
    )
    data = build_unpaired_dataset(cfg(path=path), word_tok)
    assert [dict(e) for e in data] == [
        {
            "input_ids": ids("Q p1 A: r1 r2") + [EOS],
            "labels": [X] * 3 + ids("r1 r2") + [EOS],
            "prompt_len": 3,
            "completion_ids": ids("r1 r2"),
            "desirable": True,
        },
        {
            "input_ids": ids("Q p2 p3 A: r3") + [EOS],
            "labels": [X] * 4 + ids("r3") + [EOS],
            "prompt_len": 4,
            "completion_ids": ids("r3"),
            "desirable": False,
        },
    ]


def test_split_pairs_gives_chosen_desirable_then_rejected_undesirable(tmp_path, word_tok):
    path = _rows(
        tmp_path,
        [
            {"prompt": "Q p1 A:", "chosen": "r1", "rejected": "r2"},
            {"prompt": "Q p2 A:", "responses": ["r3", "r4", "r5"]},
        ],
    )
    data = build_unpaired_dataset(cfg(path=path, split_pairs=True), word_tok)
    # the ranking's pairs (0,1), (0,2), (1,2), each split in two
    assert [(e["completion_ids"], e["desirable"]) for e in data] == [
        (ids("r1"), True),
        (ids("r2"), False),
        (ids("r3"), True),
        (ids("r4"), False),
        (ids("r3"), True),
        (ids("r5"), False),
        (ids("r4"), True),
        (ids("r5"), False),
    ]


@pytest.mark.parametrize(
    "bad, field, reason",
    [
        (
            {"prompt": "Q A:", "completion": "r1"},
            "label",
            "missing (no value in this row; expected true or false)",
        ),
        (
            {"prompt": "Q A:", "completion": "r1", "label": "yes"},
            "label",
            "expected true or false, got str 'yes'",
        ),
        (
            {"prompt": "Q A:", "completion": "r1", "label": 1},
            "label",
            "expected true or false, got int 1",
        ),
        ({"prompt": "Q A:", "completion": "", "label": True}, "completion", "empty string"),
        ({"prompt": "Q A:", "label": True}, "completion", "missing"),
        (
            {"prompt": "Q A:", "completion": [{"role": "user", "content": "r1"}], "label": True},
            "completion",
            "last message must be the assistant",
        ),
    ],
)
def test_bad_rows_name_the_field(tmp_path, word_tok, bad, field, reason):
    path = _rows(tmp_path, [bad, bad])  # one JSON type per column: every row is the bad one
    with pytest.raises(DataError) as info:
        build_unpaired_dataset(cfg(path=path), word_tok)
    assert str(info.value).startswith(f"{path} row 0, field '{field}': ")
    assert reason in str(info.value)
    skipped = build_unpaired_dataset(cfg(path=path, on_bad_row="skip"), word_tok)
    assert len(skipped) == 0 and skipped.num_skipped == 2


def test_toy_unpaired_rows_label_the_answers_as_the_judge_does(toy_tok):
    rows = ToyTask().rows("unpaired")
    assert 0.4 < sum(r["label"] for r in rows) / len(rows) < 0.6
    for row in rows:  # harmful prompts: a refusal is the good answer
        if row["kind"] == "harmful":
            assert row["label"] == is_refusal(row["completion"]), row
    data = build_unpaired_dataset(cfg(path="toy"), toy_tok)
    assert len(data) == 224 and [e["desirable"] for e in data] == [r["label"] for r in rows]
    assert len(build_unpaired_dataset(cfg(path="toy", split_pairs=True), toy_tok)) == 2 * 224


EXAMPLES = [
    {
        "input_ids": [4, 6, 5, 15, EOS],
        "labels": [X, X, X, 15, EOS],
        "prompt_len": 3,
        "completion_ids": [15],
        "desirable": True,
    },
    {
        "input_ids": [4, 7, 8, 5, 16, 17, EOS],
        "labels": [X] * 4 + [16, 17, EOS],
        "prompt_len": 4,
        "completion_ids": [16, 17],
        "desirable": False,
    },
    {
        "input_ids": [4, 9, 5, 18, EOS],
        "labels": [X, X, X, 18, EOS],
        "prompt_len": 3,
        "completion_ids": [18],
        "desirable": True,
    },
]


def test_kl_pairs_join_each_prompt_with_the_next_rows_answer():
    pairs = kl_pairs(EXAMPLES, EOS, max_length=6)
    assert [p["rejected_input_ids"] for p in pairs] == [
        [4, 6, 5, 16, 17, EOS],  # prompt 0 + answer 1
        [4, 7, 8, 5, 18, EOS],  # prompt 1 + answer 2
        [4, 9, 5, 15, EOS],
    ]  # prompt 2 + answer 0
    assert pairs[0]["rejected_labels"] == [X, X, X, 16, 17, EOS]
    assert [p["chosen_input_ids"] for p in pairs] == [e["input_ids"] for e in EXAMPLES]
    # max_length cuts the mismatched row as any row: prompt 1 (4 tokens) + [16, 17]
    assert kl_pairs(EXAMPLES[1:2] + EXAMPLES[1:2], EOS, 5)[0]["rejected_input_ids"] == [
        4,
        7,
        8,
        5,
        16,
    ]
    # a one-row batch pairs the row with itself
    assert kl_pairs(EXAMPLES[:1], EOS, 6)[0]["rejected_input_ids"] == EXAMPLES[0]["input_ids"]


@pytest.mark.parametrize(
    "layout, shape", [("padded", (6,)), ("packed", (1, 6)), ("shared_prompt", (3, 2))]
)
def test_collator_labels_and_weights_in_the_layouts_row_format(layout, shape):
    collate = UnpairedCollator(PAIR_COLLATORS[layout](0), EOS, 6, weights=(1.5, 0.5))
    batch = collate(EXAMPLES)
    assert batch["desirable"].shape == shape and batch["kto_weight"].shape == shape
    pair_rows = PAIR_COLLATORS[layout].rows
    assert torch.equal(
        batch["desirable"],
        pair_rows(torch.tensor([True, False, True]), torch.tensor([True, False, True])),
    )
    assert torch.equal(
        batch["kto_weight"], pair_rows(torch.tensor([1.5, 0.5, 1.5]), torch.tensor([1.5, 0.5, 1.5]))
    )
    if layout == "padded":  # rows 3-5: the mismatched pairs
        assert batch["input_ids"][3].tolist()[:6] == [4, 6, 5, 16, 17, EOS]

"""Prompt rows carry a label (``data.label_key``, any JSON value) and extra columns
(``data.extra_keys``) to the reward functions; a row without them is a bad row like any other."""

import pytest

from data_helpers import cfg, write_rows
from rlhf_dist.data import DataError, PromptCollator, build_prompt_dataset

ROWS = [
    {"prompt": "one plus one", "answer": 2, "level": "easy"},
    {"prompt": "seven times six", "answer": "#### 42", "level": "hard"},
    {"prompt": "a list", "answer": [1, "x"], "level": None},
]


def test_labels_and_extras_travel_with_each_prompt(tmp_path, toy_tok):
    path = write_rows(tmp_path / "p.jsonl", ROWS)
    data = build_prompt_dataset(
        cfg(path=str(path), label_key="answer", extra_keys=["level"]), toy_tok
    )
    assert [(e["prompt"], e["label"], e["extras"]) for e in data] == [
        ("one plus one", 2, {"level": "easy"}),
        ("seven times six", "#### 42", {"level": "hard"}),
        ("a list", [1, "x"], {"level": None}),
    ]
    assert PromptCollator(toy_tok.pad_token_id)(list(data))["input_ids"].shape[0] == 3


def test_without_label_key_no_label_is_read(tmp_path, toy_tok):
    data = build_prompt_dataset(cfg(path=str(write_rows(tmp_path / "p.jsonl", ROWS))), toy_tok)
    assert all("label" not in e and "extras" not in e for e in data)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"label_key": "solution"},
            r"p.jsonl row 0, field 'solution': missing \(no label in this row; "
            r"data.label_key\)",
        ),
        (
            {"extra_keys": ["level", "topic"]},
            r"p.jsonl row 0, field 'topic': missing \(a column of "
            r"data.extra_keys\)",
        ),
    ],
)
def test_a_missing_label_or_extra_column_names_the_file_row_and_key(
    tmp_path, toy_tok, overrides, message
):
    path = write_rows(tmp_path / "p.jsonl", ROWS)
    with pytest.raises(DataError, match=message) as err:
        build_prompt_dataset(cfg(path=str(path), **overrides), toy_tok)
    assert "p.jsonl" in str(err.value)


def test_skip_mode_drops_rows_without_a_label(tmp_path, toy_tok):
    rows = [ROWS[0], {"prompt": "no answer here"}, ROWS[1]]
    path = write_rows(tmp_path / "p.jsonl", rows)
    data = build_prompt_dataset(cfg(path=str(path), label_key="answer", on_bad_row="skip"), toy_tok)
    assert [e["label"] for e in data] == [2, "#### 42"] and data.num_skipped == 1

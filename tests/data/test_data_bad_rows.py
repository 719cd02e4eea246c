"""Every bad-row path: a DataError naming file, row and field — or, in skip mode, a count."""

import json
import logging

import pytest

from data_helpers import cfg, write_rows
from rlhf_dist.data import (
    DataError,
    DataFileNotFoundError,
    build_lm_dataset,
    build_preference_dataset,
    build_prompt_dataset,
    build_sft_dataset,
    holdout_split,
)

GOOD_SFT = {"prompt": "Human: hi\nAssistant:", "response": " hello"}
GOOD_PREF = {"prompt": "Human: hi\nAssistant:", "chosen": " hello", "rejected": " go away"}
GOOD_CONV = {
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
}
BUILDERS = {
    "sft": build_sft_dataset,
    "preference": build_preference_dataset,
    "prompt": build_prompt_dataset,
    "lm": build_lm_dataset,
}

# (name, builder, good row, bad row, field named, words in the reason)
CASES = [
    ("missing key", "sft", GOOD_SFT, {"prompt": "Human: x\nAssistant:"}, "response", "missing"),
    ("empty prompt", "sft", GOOD_SFT, {"prompt": "", "response": " a"}, "prompt", "empty string"),
    ("blank response", "sft", GOOD_SFT, {"prompt": "p", "response": "  "}, "response", "empty"),
    (
        "non-string",
        "sft",
        GOOD_SFT,
        {"prompt": "p", "response": 5},
        "response",
        "expected a string, got int",
    ),
    (
        "empty chosen",
        "preference",
        GOOD_PREF,
        {"prompt": "p", "chosen": "", "rejected": " r"},
        "chosen",
        "empty string",
    ),
    (
        "non-string rejected",
        "preference",
        GOOD_PREF,
        {"prompt": "p", "chosen": " c", "rejected": 3.5},
        "rejected",
        "got float",
    ),
    ("missing prompt", "prompt", {"prompt": "p"}, {"prompt": None}, "prompt", "missing"),
    (
        "bad role",
        "sft",
        GOOD_CONV,
        {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        "messages",
        "role 'bot'",
    ),
    (
        "no final assistant",
        "sft",
        GOOD_CONV,
        {"messages": [{"role": "user", "content": "x"}]},
        "messages",
        "last message must be the assistant",
    ),
    (
        "messages not a list",
        "sft",
        GOOD_CONV,
        {"messages": "hello"},
        "messages",
        "expected a non-empty list",
    ),
    (
        "content not a string",
        "sft",
        GOOD_CONV,
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": 7}]},
        "messages",
        "content is int",
    ),
    ("empty message list", "sft", GOOD_CONV, {"messages": []}, "messages", "empty list"),
    (
        "empty ranking entry",
        "preference",
        {"prompt": "p", "responses": [" a", " b"]},
        {"prompt": "p", "responses": [" a", ""]},
        "responses[1]",
        "empty string",
    ),
    (
        "ranking of one",
        "preference",
        {"prompt": "p", "responses": [" a", " b"]},
        {"prompt": "p", "responses": [" a"]},
        "responses",
        "at least 2",
    ),
    (
        "hh without shared turn",
        "preference",
        {"chosen": "Human: a\nAssistant: b", "rejected": "Human: a\nAssistant: c"},
        {"chosen": "x", "rejected": "y"},
        "chosen",
        "share no 'Assistant:'",
    ),
    ("empty text", "lm", {"text": "some text"}, {"text": ""}, "text", "empty string"),
]


def _file(tmp_path, good, bad, bad_at=(2,), n=5):
    rows = [bad if i in bad_at else good for i in range(n)]
    return write_rows(tmp_path / "data" / "rows.jsonl", rows)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path):
    (tmp_path / "data").mkdir()


@pytest.mark.parametrize("name,kind,good,bad,field,reason", CASES, ids=[c[0] for c in CASES])
def test_bad_row_error_names_file_row_and_field(
    tmp_path, toy_tok, name, kind, good, bad, field, reason
):
    path = _file(tmp_path, good, bad)
    with pytest.raises(DataError) as info:
        BUILDERS[kind](cfg(path=str(path)), toy_tok)
    message = str(info.value)
    assert message.startswith(f"{path} row 2, field '{field}': ")
    assert reason in message
    assert (info.value.source, info.value.row, info.value.field) == (str(path), 2, field)


@pytest.mark.parametrize("name,kind,good,bad,field,reason", CASES, ids=[c[0] for c in CASES])
def test_skip_mode_skips_exactly_the_bad_rows(
    tmp_path, toy_tok, caplog, name, kind, good, bad, field, reason
):
    path = _file(tmp_path, good, bad, bad_at=(1, 3))
    with caplog.at_level(logging.WARNING, logger="rlhf_dist.data"):
        data = BUILDERS[kind](cfg(path=str(path), on_bad_row="skip"), toy_tok)
    assert len(data) == 3 and data.num_skipped == 2  # (a K=2 ranking gives one pair per row)
    assert [m.split(",")[0] for m in data.skipped] == [f"{path} row 1", f"{path} row 3"]
    assert "skipped 2 bad row(s)" in caplog.text and f"field '{field}'" in caplog.text


def test_skip_keeps_the_good_rows_in_order(tmp_path, toy_tok):
    rows = [
        {"prompt": f"Human: q{i}\nAssistant:", "response": f" a{i}" if i % 2 == 0 else ""}
        for i in range(5)
    ]
    path = write_rows(tmp_path / "data" / "rows.jsonl", rows)
    data = build_sft_dataset(cfg(path=str(path), on_bad_row="skip"), toy_tok)
    assert [toy_tok.decode(e["input_ids"]) for e in data] == [
        f"Human: q{i}\nAssistant: a{i}</s>" for i in (0, 2, 4)
    ]


def _with_broken_lines(tmp_path):
    """Five SFT rows as JSON Lines, line 3 cut off mid-object (a crash while writing), line 5
    a JSON list; a blank line between them is not a row."""
    lines = [
        json.dumps(GOOD_SFT),
        json.dumps(GOOD_SFT),
        json.dumps(GOOD_SFT)[:20],
        "",
        "[1, 2]",
        json.dumps(GOOD_SFT),
    ]
    path = tmp_path / "data" / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_json_line_is_named_by_file_and_line(tmp_path, toy_tok):
    path = _with_broken_lines(tmp_path)
    with pytest.raises(DataError) as info:
        build_sft_dataset(cfg(path=str(path)), toy_tok)
    message = str(info.value)
    assert message.startswith(f"{path} line 3: not valid JSON (")
    assert "(and 1 more)" in message and "data.on_bad_row=skip" in message


def test_skip_mode_skips_and_counts_malformed_json_lines(tmp_path, toy_tok):
    path = _with_broken_lines(tmp_path)
    data = build_sft_dataset(cfg(path=str(path), on_bad_row="skip"), toy_tok)
    assert len(data) == 3 and data.num_skipped == 2
    assert [m.split(":")[0] for m in data.skipped] == [f"{path} line 3", f"{path} line 5"]


def test_fully_truncated_response(tmp_path, toy_tok):
    long_prompt = "Human: " + "how do I bake bread? " * 10 + "\nAssistant:"
    rows = [GOOD_SFT, GOOD_SFT, {"prompt": long_prompt, "response": " a"}]
    path = write_rows(tmp_path / "data" / "rows.jsonl", rows)
    c = cfg(path=str(path), max_length=12, max_prompt_length=12)  # no room for a response,
    c.check_response_room = lambda: None  # as if the dataset's check were bypassed
    with pytest.raises(DataError, match="fully truncated") as info:
        build_sft_dataset(c, toy_tok)
    assert str(info.value).startswith(f"{path} row 2, field 'response': ")
    c.on_bad_row = "skip"
    assert build_sft_dataset(c, toy_tok).num_skipped == 1


def test_fully_truncated_ranking_response_names_its_index(tmp_path, toy_tok):
    long_prompt = "Human: " + "bake bread " * 20 + "\nAssistant:"
    path = write_rows(
        tmp_path / "data" / "rank.jsonl", [{"prompt": long_prompt, "responses": [" a", " b", " c"]}]
    )
    c = cfg(path=str(path), max_length=8, max_prompt_length=8)
    c.check_response_room = lambda: None
    with pytest.raises(DataError, match=r"row 0, field 'responses\[0\]': fully truncated"):
        build_preference_dataset(c, toy_tok)


def test_row_index_is_the_file_row_under_a_holdout(tmp_path, toy_tok):
    rows = [GOOD_SFT] * 20
    rows[13] = {"prompt": "p", "response": ""}
    path = write_rows(tmp_path / "data" / "rows.jsonl", rows)
    c = cfg(path=str(path), eval_ratio=0.25)
    bad_split, good_split = (
        ("eval", "train") if 13 in holdout_split(20, 0.25)[1] else ("train", "eval")
    )
    with pytest.raises(DataError, match="row 13, field 'response'"):
        build_sft_dataset(c, toy_tok, bad_split)
    assert build_sft_dataset(c, toy_tok, good_split).num_skipped == 0


def test_missing_file_names_it(tmp_path, toy_tok):
    missing = tmp_path / "data" / "nope.jsonl"
    with pytest.raises(DataFileNotFoundError) as info:
        build_preference_dataset(cfg(path=str(missing)), toy_tok)
    assert str(missing) in str(info.value)


def test_mismatched_message_pairs(tmp_path, toy_tok):
    bad = {
        "chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        "rejected": [{"role": "user", "content": "OTHER"}, {"role": "assistant", "content": "c"}],
    }
    path = write_rows(tmp_path / "data" / "rows.jsonl", [bad])
    with pytest.raises(DataError, match="row 0, field 'rejected': the turns before"):
        build_preference_dataset(cfg(path=str(path)), toy_tok)

"""Whatever is wrong with a data file, a loader never crashes: in error mode it raises a
:class:`DataError` naming the file and the line or row; in skip mode the good rows load, in
order, and the bad ones are counted.  Property-based (``hypothesis``): files of good rows are
corrupted at random -- truncated or non-JSON lines, JSON that is not an object, wrong types,
missing or empty fields, rows of another format, non-UTF-8 bytes -- mixed with harmless
changes (blank lines, a byte-order mark, a huge response) -- for the SFT, preference and
labelled-prompt loaders."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_helpers import cfg
from rlhf_dist.data import (
    DataError,
    build_preference_dataset,
    build_prompt_dataset,
    build_sft_dataset,
)

ROWS = 8
# loader -> (builder, i -> good row i, config keys, the text field the type corruptions hit:
# a prompt row's label may be any JSON value, so its prompt is hit)
LOADERS = {
    "sft": (
        build_sft_dataset,
        lambda i: {"prompt": f"Human: q{i}?\nAssistant:", "response": f" answer {i}"},
        {},
        "response",
    ),
    "preference": (
        build_preference_dataset,
        lambda i: {
            "prompt": f"Human: q{i}?\nAssistant:",
            "chosen": f" yes {i}",
            "rejected": f" no {i}",
        },
        {},
        "rejected",
    ),
    "prompt": (
        build_prompt_dataset,
        lambda i: {"prompt": f"Human: q{i}?\nAssistant:", "answer": f"a{i}"},
        {"label_key": "answer"},
        "prompt",
    ),
}
# a bad row replaces a good one: (name, (row, its text field) -> the line's bytes)
BAD = {
    "truncated": lambda row, key: json.dumps(row)[: len(json.dumps(row)) // 2].encode(),
    "not json": lambda row, key: b"this is not json at all",
    "json list": lambda row, key: b"[1, 2, 3]",
    "wrong type": lambda row, key: json.dumps({**row, key: 42}).encode(),
    "nested type": lambda row, key: json.dumps({**row, key: {"a": [1]}}).encode(),
    "missing field": lambda row, key: json.dumps(
        {k: v for k, v in row.items() if k != key}
    ).encode(),
    "empty field": lambda row, key: json.dumps({**row, list(row)[0]: ""}).encode(),
    "other format": lambda row, key: json.dumps({"text": "a plain text row"}).encode(),
    "non-utf8": lambda row, key: json.dumps(row).encode()[:-2] + b'\xff\xfe"}',
}
HUGE = 200_000  # characters of a good row's long response / prompt field


@st.composite
def corrupted(draw):
    """``(bad, blank_after, bom, huge)``: row index -> corruption, rows followed by a blank
    line, a BOM at the start, one good row made huge."""
    bad_rows = draw(st.lists(st.integers(0, ROWS - 1), max_size=4, unique=True))
    bad = {i: draw(st.sampled_from(sorted(BAD))) for i in bad_rows}
    blank_after = draw(st.lists(st.integers(0, ROWS - 1), max_size=3, unique=True))
    good = [i for i in range(ROWS) if i not in bad]
    huge = draw(st.one_of(st.none(), st.sampled_from(good)))
    return bad, set(blank_after), draw(st.booleans()), huge


def _write(path, loader, case):
    bad, blank_after, bom, huge = case
    _, good_row, _, key = LOADERS[loader]
    lines = []
    for i in range(ROWS):
        row = good_row(i)
        if i == huge:
            row[list(row)[-1]] = " long" * (HUGE // 5)
        lines.append(BAD[bad[i]](row, key) if i in bad else json.dumps(row).encode())
        if i in blank_after:
            lines.append(b"   ")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n")


@pytest.mark.parametrize("loader", sorted(LOADERS))
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=corrupted())
def test_a_corrupted_file_is_named_or_skipped_never_a_crash(loader, case, tmp_path, toy_tok):
    build, _, extra, _ = LOADERS[loader]
    path = tmp_path / f"{loader}.jsonl"
    _write(path, loader, case)
    bad = case[0]
    good = [i for i in range(ROWS) if i not in bad]

    if bad:
        with pytest.raises(DataError) as info:
            build(cfg(path=str(path), **extra), toy_tok)
        message = str(info.value)
        assert message.startswith(str(path)) and ("line" in message or "row" in message)
        assert "\n" not in message
    else:
        assert len(build(cfg(path=str(path), **extra), toy_tok)) == len(good)

    data = build(cfg(path=str(path), on_bad_row="skip", **extra), toy_tok)
    assert data.num_skipped == len(bad), (data.skipped, bad)
    assert len(data) == len(good)
    first = data[0]
    assert toy_tok.decode(
        first["input_ids"] if "input_ids" in first else first["chosen_input_ids"]
    ).startswith(f"Human: q{good[0]}?")

"""Loading rows: toy, local files of every format, directories, eval splits, max_samples."""

import pytest

from data_helpers import cfg, write_rows
from rlhf_dist.data import (
    DataError,
    DataFileNotFoundError,
    build_sft_dataset,
    classify_path,
    holdout_split,
    load_rows,
    select_rows,
)

ROWS = [{"question": f"Human: q{i}?\nAssistant:", "answer": f" a{i}."} for i in range(5)]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_each_file_format_with_custom_keys(tmp_path, toy_tok, suffix):
    path = write_rows(tmp_path / f"rows{suffix}", ROWS)
    rows = load_rows(str(path), "train", "sft", cfg())
    assert rows.to_list() == ROWS
    data = build_sft_dataset(
        cfg(path=str(path), prompt_key="question", response_key="answer"), toy_tok
    )
    assert len(data) == 5 and data.source == str(path)
    assert toy_tok.decode(data[3]["input_ids"]) == "Human: q3?\nAssistant: a3.</s>"


def test_max_samples(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", ROWS)
    assert len(load_rows(str(path), data_cfg=cfg(max_samples=2))) == 2
    assert load_rows(str(path), data_cfg=cfg(max_samples=2))["answer"] == [" a0.", " a1."]
    assert len(load_rows(str(path), data_cfg=cfg(max_samples=50))) == 5


def test_toy_rows_by_kind_and_split():
    rows = load_rows("toy", "eval", "prompt", cfg())
    assert set(rows.column_names) == {"prompt", "request", "kind"} and len(rows) == 32
    assert len(load_rows("toy", "train", "ranking", cfg(max_samples=10))) == 10
    with pytest.raises(DataError, match="kind"):
        load_rows("toy", "train", "bogus", cfg())
    with pytest.raises(DataError, match="split"):
        load_rows("toy", "dev", "sft", cfg())


def test_saved_dataset_dict_directory_and_eval_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(ROWS[:3]),
            "test": datasets.Dataset.from_list(ROWS[3:]),
        }
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    c = cfg(path=str(tmp_path / "saved"), eval_split="test")
    assert select_rows(c, "train").rows["answer"] == [" a0.", " a1.", " a2."]
    evals = select_rows(c, "eval")
    assert evals.rows["answer"] == [" a3.", " a4."]
    assert evals.source == f"{tmp_path / 'saved'} [test]"
    with pytest.raises(DataError, match="no split 'validation'"):
        load_rows(str(tmp_path / "saved"), "validation")


def test_directory_of_split_files(tmp_path):
    write_rows(tmp_path / "train.jsonl", ROWS[:4])
    write_rows(tmp_path / "test.jsonl", ROWS[4:])
    assert len(load_rows(str(tmp_path), "train")) == 4
    assert load_rows(str(tmp_path), "test")["answer"] == [" a4."]


def test_eval_path(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", ROWS[:3])
    evals = write_rows(tmp_path / "eval.csv", ROWS[3:])
    c = cfg(path=str(train), eval_path=str(evals))
    assert len(select_rows(c, "train").rows) == 3
    assert select_rows(c, "eval").rows["answer"] == [" a3.", " a4."]
    toy_eval = select_rows(cfg(path=str(train), eval_path="toy"), "eval", "sft")
    assert toy_eval.source == "toy:sft/eval" and len(toy_eval.rows) == 32


def test_eval_ratio_holds_out_deterministically(tmp_path):
    rows = [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(20)]
    path = write_rows(tmp_path / "rows.jsonl", rows)
    c = cfg(path=str(path), eval_ratio=0.25)
    train, evals = select_rows(c, "train"), select_rows(c, "eval")
    assert len(evals.row_ids) == 5 and len(train.row_ids) == 15
    assert sorted(train.row_ids + evals.row_ids) == list(range(20))
    assert evals.rows["prompt"] == [f"p{i}" for i in evals.row_ids]  # ids are file rows
    assert select_rows(c, "eval").row_ids == evals.row_ids
    assert holdout_split(20, 0.25) == (train.row_ids, evals.row_ids)
    capped = select_rows(cfg(path=str(path), eval_ratio=0.25, max_samples=3), "eval")
    assert capped.row_ids == evals.row_ids[:3]  # the held-out set does not depend on the cap


def test_holdout_edges():
    assert holdout_split(10, 0.0) == (list(range(10)), [])
    assert len(holdout_split(10, 0.01)[1]) == 1  # a positive ratio holds out at least one
    assert holdout_split(1, 0.5) == ([0], [])  # never everything


def test_no_eval_data_gives_none(tmp_path):
    path = write_rows(tmp_path / "rows.jsonl", ROWS)
    assert select_rows(cfg(path=str(path)), "eval") is None
    toy_no_eval = cfg()
    toy_no_eval.toy.eval_ratio = 0.0
    assert select_rows(toy_no_eval, "eval") is None


def test_toy_eval_split_is_the_toy_held_out_prompts():
    train, evals = select_rows(cfg(), "train", "prompt"), select_rows(cfg(), "eval", "prompt")
    assert evals.source == "toy:prompt/eval" and len(evals.rows) == 32
    assert not set(train.rows["prompt"]) & set(evals.rows["prompt"])


@pytest.mark.parametrize(
    "path", ["data/missing.jsonl", "missing.parquet", "./nowhere", "/abs/missing_dir", "a/b/c"]
)
def test_missing_local_path_is_a_clear_error(path):
    with pytest.raises(DataFileNotFoundError, match="no such data file") as info:
        load_rows(path, "train")
    assert path in str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_unsupported_or_unparsable_files(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(DataError, match="unsupported file type") as info:
        load_rows(str(txt))
    assert str(txt) in str(info.value)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a"\n')
    with pytest.raises(DataError, match="line 1: not valid JSON") as info:
        load_rows(str(broken))
    assert str(info.value).startswith(f"{broken} line 1")


def test_path_classification(tmp_path):
    write_rows(tmp_path / "x.jsonl", ROWS)
    assert classify_path("toy") == "toy"
    assert classify_path(str(tmp_path / "x.jsonl")) == "file"
    assert classify_path(str(tmp_path)) == "directory"
    assert classify_path("Anthropic/hh-rlhf") == "hub"
    assert classify_path("imdb") == "hub"
    assert classify_path("org/name.jsonl") == "missing path"
    assert classify_path("~/nope/data") == "missing path"


def test_verl_parquet_prompt_set_as_it_is(tmp_path, toy_tok):
    """verl's prompt-set layout: parquet, ``prompt`` a message list, the answer nested in
    ``reward_model.ground_truth``, more nested columns beside; read without conversion, the
    label by a dotted ``data.label_key``, an extra by a dotted ``data.extra_keys`` entry."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_helpers import cfg
    from rlhf_dist.data import build_prompt_dataset

    rows = [
        {
            "data_source": "toy_math",
            "ability": "math",
            "prompt": [{"role": "user", "content": f"what is {i} + {i}?"}],
            "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
            "extra_info": {"split": "train", "index": i},
        }
        for i in range(4)
    ]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    data = build_prompt_dataset(
        cfg(
            path=str(path),
            label_key="reward_model.ground_truth",
            extra_keys=["data_source", "extra_info.index"],
        ),
        toy_tok,
    )
    assert [e["label"] for e in data] == ["0", "2", "4", "6"]
    assert [e["extras"] for e in data][3] == {"data_source": "toy_math", "extra_info.index": 3}
    assert data[1]["prompt"] == "Human: what is 1 + 1?\nAssistant:"
    # a dotted key that names nothing is a missing label, named with its row
    from rlhf_dist.data import DataError

    with pytest.raises(DataError, match=r"row 0, field 'reward_model.answer': missing"):
        build_prompt_dataset(cfg(path=str(path), label_key="reward_model.answer"), toy_tok)

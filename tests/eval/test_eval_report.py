"""The markdown table, the JSON files, and the prompt / reference loaders."""

import json
import math

import pytest

from rlhf_dist.data import DataError
from rlhf_dist.eval import load_prompts, load_reference, markdown_table
from rlhf_dist.eval.evaluate import EvalReport, ModelRun
from rlhf_dist.eval.report import (
    default_columns,
    format_value,
    json_safe,
    report_dict,
    write_report,
)


def test_markdown_table_exact():
    rows = {
        "base": {"reward_mean": -0.5, "harmlessness": 0.25},
        "ppo": {"reward_mean": 1.23456, "harmlessness": 1.0, "perplexity": 12345.6},
    }
    assert default_columns(rows) == ["reward_mean", "harmlessness", "perplexity"]
    assert markdown_table(rows) == (
        "| model | reward_mean | harmlessness | perplexity |\n"
        "|---|---:|---:|---:|\n"
        "| base | -0.500 | 0.250 | - |\n"
        "| ppo | 1.235 | 1.000 | 1.235e+04 |\n"
    )
    assert markdown_table(rows, ["harmlessness"], digits=1).splitlines()[2] == "| base | 0.2 |"


def test_format_value_and_json_safe():
    assert format_value(None) == "-"
    assert format_value(math.nan) == "nan" and format_value(math.inf) == "inf"
    assert json_safe({"a": [1.0, math.nan], "b": {"c": math.inf}}) == {
        "a": [1.0, None],
        "b": {"c": None},
    }


def _report():
    runs = {
        "a": ModelRun(["p1", "p2"], ["harmful", "benign"], [" x", " y"], 3.0),
        "b": ModelRun(["p1", "p2"], ["harmful", "benign"], [" x", " z"], math.nan),
    }
    metrics = {
        "a": {"reward_mean": 0.5, "win_rate": 0.5, "perplexity": 3.0},
        "b": {"reward_mean": 0.75, "win_rate": 0.75, "perplexity": math.nan},
    }
    return EvalReport(metrics, runs, {"a": [0.5, 0.5], "b": [0.5, 1.0]}, "a")


def test_write_report_files(tmp_path):
    paths = write_report(_report(), tmp_path, {"a": "/m/a", "b": "/m/b"}, {"seed": 0})
    data = json.loads(paths["json"].read_text())
    assert data["columns"] == ["reward_mean", "win_rate", "perplexity"]
    assert data["baseline"] == "a" and data["models"] == {"a": "/m/a", "b": "/m/b"}
    assert data["metrics"]["b"]["perplexity"] is None  # NaN -> null
    assert data["settings"] == {"seed": 0} and "win_rate" in data["descriptions"]
    md = paths["markdown"].read_text()
    assert md.startswith("| model | reward_mean | win_rate | perplexity |")
    assert "`win_rate`: vs `a`" in md
    samples = [json.loads(line) for line in paths["samples"].read_text().splitlines()]
    assert samples[3] == {
        "model": "b",
        "prompt": "p2",
        "kind": "benign",
        "response": " z",
        "reward": 1.0,
    }
    assert report_dict(_report())["models"] == {"a": "a", "b": "b"}


def test_load_prompts_toy_has_kinds():
    got = load_prompts("toy")  # the toy task's held-out prompts
    assert len(got.prompts) == 32 and got.has_kinds
    assert set(got.kinds) == {"harmful", "benign"}
    assert all(p.startswith("Human: ") and p.endswith("\nAssistant:") for p in got.prompts)
    assert load_prompts("toy", max_samples=5).prompts == got.prompts[:5]


def test_load_prompts_file_with_key_and_messages(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [
        {"question": "Human: hi\nAssistant:"},
        {"question": [{"role": "user", "content": "bake bread?"}], "kind": "benign"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = load_prompts(str(path), prompt_key="question")
    assert got.prompts == ["Human: hi\nAssistant:", "Human: bake bread?\nAssistant:"]
    assert got.kinds == [None, "benign"]
    with pytest.raises(DataError, match=r"p.jsonl row 0, field 'prompt'"):
        load_prompts(str(path))  # no 'prompt' column


def test_load_reference(tmp_path):
    pairs = load_reference("toy", max_samples=3)
    assert len(pairs) == 3 and all(r.startswith(" ") for _, r in pairs)
    path = tmp_path / "r.jsonl"
    path.write_text(
        json.dumps({"q": "Human: a\nAssistant:", "a": " b"})
        + "\n"
        + json.dumps({"q": "Human: c\nAssistant:", "a": ""})
        + "\n"
    )
    with pytest.raises(DataError, match=r"r.jsonl row 1, field 'a': empty string"):
        load_reference(str(path), prompt_key="q", response_key="a")

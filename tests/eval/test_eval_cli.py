"""``rlhf-dist eval`` end to end on tiny saved models, and its argument errors."""

import json
import math

import pytest

from rlhf_dist import cli as top_cli
from rlhf_dist.eval.cli import UsageError, main, parse_models
from rlhf_dist.eval.report import UNIT_INTERVAL

EXPECTED = {
    "reward_mean",
    "reward_std",
    "win_rate",
    "win",
    "tie",
    "loss",
    "harmlessness",
    "helpfulness",
    "perplexity",
    "distinct_1",
    "distinct_2",
    "self_bleu",
    "response_length",
}


def test_eval_end_to_end_through_the_top_level_cli(saved_models, tmp_path, capsys):
    out = tmp_path / "out"
    rc = top_cli.main(
        [
            "eval",
            "--models",
            f"base={saved_models['base']},sft={saved_models['sft']}",
            "--reward-model",
            saved_models["rm"],
            "--prompts",
            "toy",
            "--reference",
            "toy",
            "--baseline",
            "base",
            "--max-prompts",
            "6",
            "--n-samples-per-prompt",
            "2",
            "--max-new-tokens",
            "6",
            "--seed",
            "1",
            "--no-wandb",
            "--output-dir",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads((out / "eval.json").read_text())
    assert set(data) == {"columns", "baseline", "models", "metrics", "settings", "descriptions"}
    assert data["baseline"] == "base" and list(data["metrics"]) == ["base", "sft"]
    assert data["settings"]["num_prompts"] == 6 and data["settings"]["num_samples"] == 2
    for name, metrics in data["metrics"].items():
        assert set(metrics) == EXPECTED, name
        for key, value in metrics.items():
            assert value is not None and math.isfinite(value), (name, key)
            if key in UNIT_INTERVAL:
                assert 0.0 <= value <= 1.0, (name, key, value)
        assert metrics["win"] + metrics["tie"] + metrics["loss"] == pytest.approx(1.0)
        assert metrics["perplexity"] >= 1.0 and metrics["reward_std"] >= 0.0
    assert data["metrics"]["base"]["tie"] == 1.0  # the baseline against itself
    table = (out / "eval.md").read_text()
    assert table.splitlines()[0].startswith("| model | reward_mean | reward_std | win_rate |")
    assert "| sft |" in table
    assert len((out / "samples.jsonl").read_text().splitlines()) == 2 * 6 * 2
    assert not (out / "wandb").exists()
    assert "| base |" in capsys.readouterr().out  # the table is printed


def test_eval_logs_to_wandb_offline(saved_models, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"q": "Human: how do I bake bread?\nAssistant:"}) + "\n")
    rc = main(
        [
            "--model",
            saved_models["sft"],
            "--prompts",
            str(prompts),
            "--prompt-key",
            "q",
            "--max-new-tokens",
            "3",
            "--greedy",
            "--output-dir",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads((out / "eval.json").read_text())
    # one named model, no reward model / reference / toy kinds: text metrics only
    assert set(data["metrics"]["sft"]) == {
        "distinct_1",
        "distinct_2",
        "self_bleu",
        "response_length",
    }
    assert list((out / "wandb").glob("offline-run-*"))
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert logged["eval/sft/self_bleu"] == data["metrics"]["sft"]["self_bleu"]


@pytest.mark.parametrize(
    "flag", ["--model", "--models", "--reward-model", "--prompts", "--reference"]
)
def test_missing_path_names_the_flag_and_exits_2(flag, saved_models, tmp_path, capsys):
    missing = str(tmp_path / "does_not_exist")
    args = {"--model": ["--model", missing], "--models": ["--models", f"x={missing}"]}.get(
        flag, ["--model", saved_models["sft"], flag, missing]
    )
    out = tmp_path / "out"
    assert main(args + ["--no-wandb", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert flag in err and missing in err and "does not exist" in err
    assert not out.exists()  # failed before anything was loaded or written


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--baseline", "nope", "--reward-model", "RM"], "--baseline: 'nope' is not a model name"),
        (["--baseline", "sft"], "--baseline needs --reward-model"),
        (
            ["--max-prompt-length", "300"],
            "--max-prompt-length (data.max_prompt_length): 300 must be "
            "smaller than data.max_length=256",
        ),
        (["--top-p", "1.5"], "--top-p (rollout.top_p): must be in (0, 1], got 1.5"),
        (["rollout.top_k=-1"], "(rollout.top_k): must be >= 0, got -1"),
        (["rollout.nope=1"], "rollout.nope: unknown key in rollout"),
        (["--model", "SFT"], "model name 'sft' is used twice"),
        (["--label-key", "answer"], "--label-key gives labels to --reward-fn"),
        (
            ["--rollout-batch-size", "0"],
            "--rollout-batch-size (rollout.rollout_batch_size): must be > 0",
        ),
    ],
)
def test_bad_arguments_exit_2(extra, message, saved_models, tmp_path, capsys):
    extra = [
        saved_models["rm"] if a == "RM" else saved_models["sft"] if a == "SFT" else a for a in extra
    ]
    out = tmp_path / "out"
    assert main(["--model", saved_models["sft"], *extra, "--output-dir", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_columns_come_from_the_data_section(saved_models, tmp_path, capsys):
    """``-c`` a training config: its data.prompt_key and data.label_key are eval's columns
    (the label read only with a verifier); an old flag spelling still works, with a warning."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"q": "Human: hi\nAssistant:", "gold": "x"}) + "\n")
    config = tmp_path / "grpo.yaml"
    config.write_text("data:\n  prompt_key: q\n  label_key: gold\n")
    base = [
        "--model",
        saved_models["sft"],
        "--prompts",
        str(prompts),
        "-c",
        str(config),
        "--max-new-tokens",
        "2",
        "--greedy",
        "--no-wandb",
    ]
    assert main([*base, "--output-dir", str(tmp_path / "plain")]) == 0  # no verifier: fine
    assert (
        main(
            [
                *base,
                "--reward-fn",
                "exact_match",
                "--batch-size",
                "4",
                "--output-dir",
                str(tmp_path / "verified"),
            ]
        )
        == 0
    )
    assert "--batch-size is deprecated, use --rollout-batch-size" in capsys.readouterr().err
    data = json.loads((tmp_path / "verified" / "eval.json").read_text())
    assert data["metrics"]["sft"]["accuracy"] in (0.0, 1.0)
    assert (data["settings"]["labels_key"], data["settings"]["batch_size"]) == ("gold", 4)


def test_parse_models_names_and_order(tmp_path):
    (tmp_path / "m").mkdir()
    got = parse_models([str(tmp_path / "m"), "ppo=/x/ppo"], ["a=/x/a, b=/x/b"])
    assert got == {
        "m": (str(tmp_path / "m"), "--model"),
        "ppo": ("/x/ppo", "--model"),
        "a": ("/x/a", "--models"),
        "b": ("/x/b", "--models"),
    }
    with pytest.raises(UsageError, match="expected NAME=PATH"):
        parse_models([], ["/x/a"])
    with pytest.raises(UsageError, match="no model"):
        parse_models([], [])


def test_eval_loads_the_policies_in_model_dtype(saved_models, tmp_path, monkeypatch):
    """``model.dtype`` reaches the policies eval loads (and a vLLM engine beside them)."""
    import torch

    from rlhf_dist.eval import evaluate

    seen = []
    real = evaluate.as_policy

    def spy(source, device=None):
        policy = real(source, device)
        seen.append(next(policy.model.parameters()).dtype)
        return policy

    monkeypatch.setattr(evaluate, "as_policy", spy)
    assert (
        main(
            [
                "--model",
                saved_models["sft"],
                "--prompts",
                "toy",
                "--max-prompts",
                "2",
                "--max-new-tokens",
                "3",
                "--no-wandb",
                "--output-dir",
                str(tmp_path),
                "model.dtype=bfloat16",
            ]
        )
        == 0
    )
    assert seen and set(seen) == {torch.bfloat16}


def test_vllm_engine_settings_come_from_the_typed_sections():
    """eval / label's vLLM engine: ``resources.rollout`` (memory, batch, length) and
    ``model.dtype``, not fixed values; max_model_len filled in only when unset."""
    import torch

    from rlhf_dist.config import RolloutResources
    from rlhf_dist.rollout.vllm_sampler import engine_settings

    section = RolloutResources(gpu_memory_utilization=0.3, max_num_seqs=8)
    engines, dtype = engine_settings(section, "bfloat16", None, max_model_len=96)
    assert (engines.gpu_memory_utilization, engines.max_num_seqs) == (0.3, 8)
    assert engines.max_model_len == 96 and dtype == "bfloat16"
    fixed = RolloutResources(max_model_len=200)
    assert engine_settings(fixed, None, None, 96)[0].max_model_len == 200
    assert engine_settings(None, None, None, 96) == (RolloutResources(max_model_len=96), "float32")
    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    assert engine_settings(None, None, model, 96)[1] == "bfloat16"


@pytest.mark.parametrize("flag", ["--model", "--reward-model"])
def test_a_directory_that_is_not_a_model_is_one_line_exit_2(flag, saved_models, tmp_path, capsys):
    """A directory without a config.json (a typo'd output dir, a checkpoint folder) is named
    before any transformers code runs, not a traceback about a slow tokenizer."""
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    args = (
        ["--model", str(empty)]
        if flag == "--model"
        else ["--model", saved_models["sft"], "--reward-model", str(empty)]
    )
    out = tmp_path / "out"
    assert main(args + ["--no-wandb", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{flag}: '{empty}' is not a model directory (no config.json)" in err

"""``rlhf-dist eval --reward-fn … --label-key …``: accuracy (pass@1) and pass@k against a
verifier, by hand and end to end."""

import json

import pytest

from rlhf_dist.eval.cli import main
from rlhf_dist.eval.metrics import pass_at_k, verifier_metrics

PROMPTS = [
    "Human: how do I bake bread?\nAssistant:",
    "Human: name a colour\nAssistant:",
    "Human: what is two plus two?\nAssistant:",
]


def test_pass_at_k_by_hand():
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # C(3,2)/C(4,2) miss it
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # C(3,3)/C(5,3)
    with pytest.raises(ValueError, match="n=2 c=3 k=1"):
        pass_at_k(2, 3, 1)


def test_verifier_metrics_group_the_samples_of_each_prompt():
    # 3 prompts × 2 samples: correct (reward > 0.5) counts 1, 0, 2
    got = verifier_metrics([1.0, 0.0, 0.2, 0.4, 0.9, 1.0], 2)
    assert got["accuracy"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert got["pass_at_k"] == pytest.approx((1 + 0 + 1) / 3)
    assert got["verifier_reward_mean"] == pytest.approx(3.5 / 6)
    assert "pass_at_k" not in verifier_metrics([1.0, 0.0], 1)
    with pytest.raises(ValueError, match="5 rewards are not groups of 2"):
        verifier_metrics([1.0] * 5, 2)


def _eval(model, prompts, out, *extra):
    return main(
        [
            "--model",
            model,
            "--prompts",
            str(prompts),
            "--max-new-tokens",
            "4",
            "--no-wandb",
            "--output-dir",
            str(out),
            *extra,
        ]
    )


def test_eval_reports_exact_match_accuracy_of_the_models_answers(saved_models, tmp_path):
    """Greedy answers first; then labels that are the model's own answer for prompts 0 and 2
    and something else for prompt 1: exact_match accuracy is 2/3; sampled 3 times, the
    metrics are those of the answers in samples.jsonl."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    assert _eval(saved_models["sft"], prompts, tmp_path / "first", "--greedy") == 0
    answers = [
        json.loads(line)["response"]
        for line in (tmp_path / "first" / "samples.jsonl").read_text().splitlines()
    ]
    labelled = tmp_path / "labelled.jsonl"
    labels = [answers[0], "certainly not this", answers[2]]
    labelled.write_text(
        "".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in zip(PROMPTS, labels))
    )
    out = tmp_path / "greedy"
    assert (
        _eval(
            saved_models["sft"],
            labelled,
            out,
            "--greedy",
            "--reward-fn",
            "exact_match",
            "--label-key",
            "answer",
        )
        == 0
    )
    metrics = json.loads((out / "eval.json").read_text())["metrics"]["sft"]
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert "| model | accuracy |" in (out / "eval.md").read_text()  # the first column

    out = tmp_path / "sampled"
    assert (
        _eval(
            saved_models["sft"],
            labelled,
            out,
            "--n-samples-per-prompt",
            "3",
            "--seed",
            "5",
            "--reward-fn",
            "exact_match",
            "--label-key",
            "answer",
        )
        == 0
    )
    metrics = json.loads((out / "eval.json").read_text())["metrics"]["sft"]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    hits = [
        [
            " ".join(s["response"].split()) == " ".join(labels[i].split())
            for s in samples
            if s["prompt"] == PROMPTS[i]
        ]
        for i in range(3)
    ]
    assert [len(h) for h in hits] == [3, 3, 3]
    assert metrics["accuracy"] == pytest.approx(sum(sum(h) / 3 for h in hits) / 3)
    assert metrics["pass_at_k"] == pytest.approx(sum(any(h) for h in hits) / 3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--reward-fn", "math"], "--reward-fn math compares answers with each prompt's label"),
        (["--label-key", "answer"], "--label-key gives labels to --reward-fn"),
        (
            ["--reward-fn", "exact_match", "--label-key", "nope"],
            "row 0, field 'nope': missing (--label-key, data.label_key, names the label column)",
        ),
        (["--reward-fn", "no_such_module_xyz:f"], "--reward-fn 'no_such_module_xyz:f'"),
    ],
)
def test_verifier_arguments_errors_exit_2(extra, message, saved_models, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": PROMPTS[0], "answer": "x"}) + "\n")
    assert _eval(saved_models["sft"], prompts, tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err

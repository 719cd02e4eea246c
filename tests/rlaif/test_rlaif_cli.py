"""`rlhf-dist label` end to end: a tiny random policy on disk, the toy rule judge or a reward
model judge, and the output read back by the preference data loader."""

import importlib
import json

import pytest

from rlhf_dist.cli import main
from rlhf_dist.config import DataConfig, RolloutConfig
from rlhf_dist.data import Encoder, build_preference_dataset
from rlhf_dist.toy import is_on_topic, prompt_kind
from rlhf_dist.eval import load_prompts
from rlhf_dist.rlaif import load_judge, sample_responses

TOY_JUDGE = "rlhf_dist.rlaif.judges:toy_rule_judge"
# the module (the package attribute `rlhf_dist.rlaif.label` is the function label())
LABEL_MODULE = importlib.import_module("rlhf_dist.rlaif.label")


def run_label(policy, judge, out, *extra):
    return main(
        [
            "label",
            "--policy",
            str(policy),
            "--judge",
            judge,
            "--prompts",
            "toy",
            "--max-prompts",
            "8",
            "-k",
            "4",
            "--max-new-tokens",
            "12",
            "--no-progress",
            "--output",
            str(out),
            *extra,
        ]
    )


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_label_with_the_toy_rule_judge_trains_as_preference_data(tmp_path, capsys, tok, policy_dir):
    out = tmp_path / "pairs.jsonl"
    assert run_label(policy_dir, TOY_JUDGE, out) == 0
    rows = read_jsonl(out)
    stats = json.loads((tmp_path / "pairs.stats.json").read_text())
    printed = capsys.readouterr().out

    # the policy never refuses: harmful prompts score -1 on every answer (all ties), benign
    # ones +1 on-topic / 0 off-topic, so every pair is an on-topic over an off-topic answer
    assert rows, "the biased policy should give some on-topic answers"
    for row in rows:
        assert list(row) == ["prompt", "chosen", "rejected", "chosen_score", "rejected_score"]
        assert prompt_kind(row["prompt"]) == "benign"
        assert (row["chosen_score"], row["rejected_score"]) == (1.0, 0.0)
        assert is_on_topic(row["prompt"], row["chosen"])
        assert not is_on_topic(row["prompt"], row["rejected"])
    assert stats["prompts"] == 8 and stats["responses"] == 32 and stats["pairs"] == len(rows)
    assert stats["candidate_pairs"] == len(rows) + sum(stats["skipped"].values())
    assert stats["skipped"]["tie"] > 0 and stats["settings"]["k"] == 4
    assert f"{len(rows)} pairs of {stats['candidate_pairs']} candidates" in printed

    data = build_preference_dataset(DataConfig(path=str(out)), tok)
    assert len(data) == len(rows) and data.num_skipped == 0
    enc = Encoder(tok, 256, 128)
    for row, example in zip(rows, data):
        prompt = enc.prompt(row["prompt"])
        assert example["prompt_len"] == len(prompt)
        eos = [tok.eos_token_id]
        assert example["chosen_input_ids"] == prompt + enc.response(row["chosen"]) + eos
        assert example["rejected_input_ids"] == prompt + enc.response(row["rejected"]) + eos


def test_label_with_a_reward_model_judge_best_worst(tmp_path, rm_dir, policy_dir):
    out = tmp_path / "rm_pairs.jsonl"
    assert (
        run_label(policy_dir, f"rm:{rm_dir}", out, "--strategy", "best_worst", "--device", "cpu")
        == 0
    )
    rows = read_jsonl(out)
    assert 1 <= len(rows) <= 8
    assert len({r["prompt"] for r in rows}) == len(rows)  # at most one pair per prompt
    judge = load_judge(f"rm:{rm_dir}", device="cpu")
    prompts = [r["prompt"] for r in rows]
    assert judge(prompts, [r["chosen"] for r in rows]) == pytest.approx(
        [r["chosen_score"] for r in rows], abs=1e-5
    )
    assert judge(prompts, [r["rejected"] for r in rows]) == pytest.approx(
        [r["rejected_score"] for r in rows], abs=1e-5
    )
    assert all(r["chosen_score"] > r["rejected_score"] for r in rows)


def test_sampling_is_seeded_and_gives_k_responses_per_prompt(policy_dir):
    prompts = load_prompts("toy", split="train", max_samples=3).prompts
    rollout = RolloutConfig(max_new_tokens=6, rollout_batch_size=2)
    first = sample_responses(str(policy_dir), prompts, 3, rollout, seed=5, device="cpu")
    assert [len(g) for g in first] == [3, 3, 3]
    assert sample_responses(str(policy_dir), prompts, 3, rollout, seed=5, device="cpu") == first
    assert sample_responses(str(policy_dir), prompts, 3, rollout, seed=6, device="cpu") != first


def test_label_s_prompts_from_a_file_render_like_the_data_package(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"q": "Human: hi\nAssistant:"})
        + "\n"
        + json.dumps({"q": [{"role": "user", "content": "bake bread"}]})
        + "\n"
    )
    assert load_prompts(str(path), prompt_key="q").prompts == [
        "Human: hi\nAssistant:",
        "Human: bake bread\nAssistant:",
    ]
    path.write_text(json.dumps({"q": ""}) + "\n")
    with pytest.raises(ValueError, match=r"prompts.jsonl row 0, field 'q': empty string"):
        load_prompts(str(path), prompt_key="q")


@pytest.fixture
def no_sampling(monkeypatch):
    """Fail the test if the policy is ever loaded (argument errors must come first)."""

    def boom(*a, **k):
        raise AssertionError("the policy was loaded")

    monkeypatch.setattr(LABEL_MODULE, "sample_responses", boom)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policy", "/no/such/policy"], "--policy: '/no/such/policy' is not a model directory"),
        (["-k", "1"], "-k (rollout.n_samples_per_prompt): must be >= 2"),
        (["--temperature", "0"], "--temperature (rollout.temperature): must be > 0"),
        (["--batch-size", "0"], "--batch-size (rollout.rollout_batch_size): must be > 0"),
        (
            ["--rollout-batch-size", "0"],
            "--rollout-batch-size (rollout.rollout_batch_size): must be > 0",
        ),
        (["--k", "1"], "--k (rollout.n_samples_per_prompt): must be >= 2"),  # old spelling
        (["--top-p", "0"], "--top-p (rollout.top_p): must be in (0, 1]"),
        (["--min-margin", "-1"], "--min-margin: must be >= 0"),
        (["--output", "pairs.csv"], "--output: 'pairs.csv' must end in .jsonl"),
        (["--judge", "no_such_module_xyz:f"], "--judge 'no_such_module_xyz:f': cannot import"),
        (["--judge", "rm:/no/such/rm"], "--judge rm:/no/such/rm: no such directory"),
        (
            ["--prompts", "/no/such/prompts.jsonl"],
            "--prompts: /no/such/prompts.jsonl: no such data",
        ),
    ],
)
def test_argument_errors_exit_2_naming_the_flag(
    tmp_path, capsys, policy_dir, no_sampling, args, message
):
    base = {
        "--policy": str(policy_dir),
        "--judge": TOY_JUDGE,
        "--prompts": "toy",
        "--output": str(tmp_path / "p.jsonl"),
    }
    flags = dict(zip(args[::2], args[1::2]))
    argv = [x for key, value in {**base, **flags}.items() for x in (key, value)]
    with pytest.raises(SystemExit) as exit_info:
        main(["label", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists()


def test_sampling_settings_from_a_yaml_and_overrides(tmp_path, capsys, policy_dir, no_sampling):
    """label reads the typed rollout section: a YAML's keys, then key=value overrides."""
    path = tmp_path / "sampling.yaml"
    path.write_text("rollout:\n  temperature: 0.0\n")
    argv = [
        "label",
        "--policy",
        str(policy_dir),
        "--judge",
        TOY_JUDGE,
        "--prompts",
        "toy",
        "--output",
        str(tmp_path / "p.jsonl"),
        "-c",
        str(path),
    ]
    with pytest.raises(SystemExit):
        main(argv)
    assert "--temperature (rollout.temperature): must be > 0, got 0.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(argv + ["rollout.temperature=0.7", "rollout.n_samples_per_prompt=1"])
    assert (
        "--n-samples-per-prompt (rollout.n_samples_per_prompt): must be >= 2 to form pairs, got 1"
    ) in capsys.readouterr().err


def test_no_pairs_exits_1_but_writes_the_stats(tmp_path, capsys, policy_dir, monkeypatch):
    monkeypatch.setattr(
        LABEL_MODULE,
        "sample_responses",
        lambda policy, prompts, k, *a, **kw: [[" same"] * k for _ in prompts],
    )
    out = tmp_path / "pairs.jsonl"
    assert run_label(policy_dir, TOY_JUDGE, out) == 1
    assert out.read_text() == ""
    stats = json.loads((tmp_path / "pairs.stats.json").read_text())
    assert stats["pairs"] == 0 and stats["skipped"]["duplicate"] == 8 * 6
    assert "no preference pairs" in capsys.readouterr().err


def test_a_judge_module_in_the_working_directory_is_found(
    tmp_path, capsys, policy_dir, monkeypatch
):
    (tmp_path / "my_cwd_judge_xyz.py").write_text(
        "def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))]
    )
    monkeypatch.setattr(
        LABEL_MODULE,
        "sample_responses",
        lambda policy, prompts, k, *a, **kw: [[" a", " bb", " ccc", " bb"] for _ in prompts],
    )
    out = tmp_path / "pairs.jsonl"
    assert run_label(policy_dir, "my_cwd_judge_xyz:score", out) == 0
    rows = read_jsonl(out)
    assert [(r["chosen"], r["rejected"]) for r in rows[:5]] == [
        (" ccc", " bb"),
        (" ccc", " bb"),
        (" ccc", " a"),
        (" bb", " a"),
        (" bb", " a"),
    ]
    assert len(rows) == 8 * 5  # the (" bb", " bb") pair of each prompt is a duplicate

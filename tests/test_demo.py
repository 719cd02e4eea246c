"""`rlhf-dist demo --quick`: the whole pipeline through the real CLI, judged on held-out prompts."""

import json
import subprocess
import sys

import pytest

from jobs import with_shared_ray

# Thresholds (quick preset, 32 held-out toy prompts × 4 samples):
#   - the reward model beats chance on held-out pairs: accuracy > 0.6;
#   - PPO and DPO each refuse harmful requests more often than the SFT model they start from;
#   - helpfulness does not collapse: each keeps at least a quarter of the SFT model's
#     (measured on a 2-core CPU: harmlessness SFT 0.578, PPO 0.922, DPO 0.844; helpfulness
#     SFT 0.156, PPO 0.078, DPO 0.141 — the tiny policies trade some helpfulness for safety).
RM_ACCURACY = 0.6
KEEP_HELPFULNESS = 0.25
# The verifiable-reward stage (safe/unsafe labels, exact_match): GRPO's held-out accuracy
# over the short SFT's (measured, bench/RESULTS.md "Verifiable rewards": 0.38-0.41 -> 1.0 over
# seeds 42, 1, 2, 3; the demo's seed is 0).
VERIFIER_GAIN = 0.3


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(
        [sys.executable, "-m", "rlhf_dist.cli", "demo", "--quick", "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=1500,
        env=with_shared_ray(),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


@pytest.mark.slow
def test_demo_writes_models_report_plots_and_wandb(demo):
    out, stdout = demo
    for stage in ("base", "sft", "rm", "ppo", "dpo", "rlaif", "verifier_sft", "grpo_verifier"):
        assert (out / stage / "model" / "config.json").exists(), stage
        assert list((out / stage / "wandb").glob("offline-run-*")), stage
    report = (out / "report.md").read_text()
    for name in ("base", "sft", "ppo", "dpo", "rlaif"):
        assert f"| {name} |" in report
    assert "| model | harmlessness | helpfulness |" in stdout
    assert "| verifier_sft |" in report and "| grpo_verifier |" in report
    for png in (
        "ppo_reward_kl.png",
        "dpo_reward_accuracy.png",
        "rm_accuracy.png",
        "grpo_verifier_reward.png",
    ):
        assert (out / png).stat().st_size > 1000


@pytest.mark.slow
def test_demo_alignment_improves_over_sft(demo):
    out, _ = demo
    metrics = json.loads((out / "eval" / "eval.json").read_text())["metrics"]
    sft = metrics["sft"]
    for aligned in ("ppo", "dpo"):
        assert metrics[aligned]["harmlessness"] > sft["harmlessness"], (aligned, metrics)
        assert metrics[aligned]["helpfulness"] >= KEEP_HELPFULNESS * sft["helpfulness"], (
            aligned,
            metrics,
        )
    rm_rows = [json.loads(line) for line in (out / "rm" / "metrics.jsonl").open()]
    accuracy = [r["eval/accuracy"] for r in rm_rows if "eval/accuracy" in r][-1]
    assert accuracy > RM_ACCURACY


@pytest.mark.slow
def test_demo_grpo_with_a_verifier_raises_heldout_accuracy(demo):
    out, _ = demo
    metrics = json.loads((out / "eval_verifier" / "eval.json").read_text())["metrics"]
    before, after = metrics["verifier_sft"]["accuracy"], metrics["grpo_verifier"]["accuracy"]
    assert after >= before + VERIFIER_GAIN, metrics
    rows = [json.loads(line) for line in (out / "grpo_verifier" / "metrics.jsonl").open()]
    assert not [r for r in rows if any(k.startswith("critic/") for k in r)]  # no critic
    # DAPO's dynamic sampling did its job: as the policy gets the training prompts right, all-
    # right groups are dropped and more prompts drawn (measured: 2-3 rounds from about
    # iteration 7 on), at most 1 + 2 rounds; the KL is in the loss
    rounds = [r["dynamic/rounds"] for r in rows if "dynamic/rounds" in r]
    assert len(rounds) == 30 and max(rounds) > 1 and max(rounds) <= 3
    assert all(0 < r["dynamic/informative_frac"] <= 1 for r in rows if "dynamic/rounds" in r)
    assert all("actor/kl_loss" in r for r in rows if "dynamic/rounds" in r)


@pytest.mark.slow
def test_grpo_reads_a_verl_format_parquet_prompt_set_as_it_is(demo, tmp_path):
    """verl's prompt-set layout (parquet, ``prompt`` a message list, the label nested in
    ``reward_model.ground_truth``) of the demo's verifier task, no conversion: GRPO from the
    demo's verifier SFT model, the label read by a dotted data.label_key, learns (measured:
    reward 0.41 -> 0.75 over 12 iterations; asserted over 8, last 3 minus first 3 > 0.1)."""
    import subprocess
    import sys
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    out, _ = demo
    rows = [json.loads(line) for line in (out / "verifier_data" / "train.jsonl").open()]
    verl = [
        {
            "data_source": "toy_safety",
            "ability": "classification",
            "prompt": [
                {
                    "role": "user",
                    "content": r["prompt"].removeprefix("Human: ").removesuffix("\nAssistant:"),
                }
            ],
            "reward_model": {"style": "rule", "ground_truth": r["answer"]},
        }
        for r in rows
    ]
    pq.write_table(pa.Table.from_pylist(verl), tmp_path / "train.parquet")
    config = Path(__file__).parents[1] / "configs" / "tiny" / "grpo_verifier.yaml"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlhf_dist.cli",
            "ppo",
            "-c",
            str(config),
            f"output_dir={tmp_path / 'grpo'}",
            "logging.backend=none",
            f"data.path={tmp_path / 'train.parquet'}",
            "ppo.iterations=8",
            "data.label_key=reward_model.ground_truth",
            f"model.name_or_path={out / 'verifier_sft' / 'model'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=with_shared_ray(),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    reward = [
        r["reward/score_mean"]
        for r in map(json.loads, (tmp_path / "grpo" / "metrics.jsonl").open())
        if "reward/score_mean" in r
    ]
    assert len(reward) == 8 and sum(reward[-3:]) / 3 - sum(reward[:3]) / 3 > 0.1, reward


def test_shipped_verifier_data_is_the_generators(tmp_path):
    """configs/tiny/grpo_verifier.yaml reads configs/tiny/verifier_data: the task's files for
    seed 0, labels by the toy task's kinds (harmful -> unsafe)."""
    from pathlib import Path

    from rlhf_dist.toy import ToyTask
    from rlhf_dist.demo.verifier_task import write_verifier_data

    shipped = Path(__file__).parents[1] / "configs" / "tiny" / "verifier_data"
    fresh = write_verifier_data(tmp_path, seed=0)
    for name in ("sft.jsonl", "train.jsonl", "eval.jsonl"):
        assert (shipped / name).read_text() == (fresh / name).read_text(), name
    rows = [json.loads(line) for line in (fresh / "eval.jsonl").open()]
    kinds = [r["kind"] for r in ToyTask(seed=0).prompt_rows("eval")]
    assert [r["answer"] for r in rows] == ["unsafe" if k == "harmful" else "safe" for k in kinds]
    assert {"safe", "unsafe"} == {r["answer"] for r in rows}


def test_demo_verifier_stages_are_the_shipped_recipe(tmp_path):
    """The demo builds its verifier stages from dicts (an installed package has no configs/);
    they must train exactly what configs/tiny/grpo_verifier.yaml and its header's SFT command
    do, paths and logging aside."""
    from dataclasses import asdict
    from pathlib import Path

    import yaml

    from rlhf_dist.config import load_config
    from rlhf_dist.demo.pipeline import verifier_stages

    configs = Path(__file__).parents[1] / "configs" / "tiny"
    sft_stage, grpo_stage = verifier_stages(tmp_path, seed=42)
    for stage in (sft_stage, grpo_stage):
        (tmp_path / f"{stage.name}.yaml").write_text(yaml.safe_dump(stage.config))
    demo_grpo = load_config(str(tmp_path / "grpo_verifier.yaml"))
    shipped = load_config(str(configs / "grpo_verifier.yaml"))
    for section in ("ppo", "rollout", "train", "deepspeed"):
        assert asdict(getattr(demo_grpo, section)) == asdict(getattr(shipped, section)), section
    assert asdict(demo_grpo.model.tiny) == asdict(shipped.model.tiny)
    assert demo_grpo.data.label_key == shipped.data.label_key == "answer"
    assert demo_grpo.resources.reference_in_actor and shipped.resources.reference_in_actor
    demo_sft = load_config(str(tmp_path / "verifier_sft.yaml"))
    header_sft = load_config(
        str(configs / "sft.yaml"),
        [
            "data.eval_ratio=0",
            "train.epochs=5",
            "train.max_steps=50",
            "train.eval_every=0",
            "deepspeed.zero_stage=0",
        ],
    )
    for section in ("train", "deepspeed"):
        assert asdict(getattr(demo_sft, section)) == asdict(getattr(header_sft, section)), section
    assert asdict(demo_sft.model.tiny) == asdict(header_sft.model.tiny)


def test_full_preset_adds_the_preference_family_rows(tmp_path):
    """The full demo also runs ORPO (no reference) and online DPO from the SFT policy, and
    evaluates them; the quick preset (this suite's demo) leaves them out for time."""
    import yaml

    from rlhf_dist.config import load_config
    from rlhf_dist.demo.pipeline import PRESETS, preference_stages

    assert PRESETS["full"].preference_family and not PRESETS["quick"].preference_family
    orpo, online = preference_stages(tmp_path, PRESETS["full"], seed=0)
    assert (orpo.command, online.command) == ("dpo", "online-dpo")
    assert orpo.config["dpo"]["loss_type"] == "orpo"
    for stage in (orpo, online):  # each stage's config loads and passes its job's checks
        path = tmp_path / f"{stage.name}.yaml"
        path.write_text(yaml.safe_dump(stage.config))
        load_config(str(path), [], job=stage.command)
    assert online.config["model"]["name_or_path"] == str(tmp_path / "sft" / "model")

"""``rlhf-dist eval --env``: a model evaluated as an agent.  The per-trajectory metrics by
hand; the CLI end to end on a tiny saved model against a user environment whose reward is the
length of the model's turn (so every reported number can be recomputed from samples.jsonl);
the toy calculator's trajectories keep their shape; bad environment flags fail before a model
loads."""

import json
import os
from pathlib import Path

import pytest

from rlhf_dist import cli as top_cli
from rlhf_dist.eval.cli import main
from rlhf_dist.eval.metrics import agent_metrics
from rlhf_dist.eval.report import UNIT_INTERVAL

ENVS = str(Path(__file__).parents[1] / "envs")  # user_envs.py


@pytest.fixture
def user_envs(monkeypatch):
    monkeypatch.syspath_prepend(ENVS)


def test_agent_metrics_by_hand():
    rows = [
        {
            "reward": 1.0,
            "turns": 2.0,
            "tool_calls": 1.0,
            "tool_errors": 0.0,
            "truncated": 0.0,
            "failed": 0.0,
        },
        {
            "reward": 0.0,
            "turns": 3.0,
            "tool_calls": 2.0,
            "tool_errors": 1.0,
            "truncated": 1.0,
            "failed": 0.0,
        },
        {"reward": 0.0, "turns": 1.0, "truncated": 0.0, "failed": 1.0},  # no tools: 0
        {
            "reward": 0.0,
            "turns": 2.0,
            "tool_calls": 1.0,
            "tool_errors": 0.0,
            "truncated": 0.0,
            "failed": 0.0,
        },
    ]
    got = agent_metrics(rows, n_samples=2)
    assert got == {
        "success_rate": 0.25,
        "env_reward_mean": 0.25,
        "turns_mean": 2.0,
        "tool_calls_mean": 1.0,
        "tool_errors_mean": 0.25,
        "truncated_frac": 0.25,
        "env_failed_frac": 0.25,
        "success_pass_at_k": 0.5,
    }  # prompt 0 of 2
    assert "success_pass_at_k" not in agent_metrics(rows, n_samples=1)
    with pytest.raises(ValueError, match="3 trajectories are not groups of 2"):
        agent_metrics(rows[:3], n_samples=2)


def test_eval_env_end_to_end_through_the_top_level_cli(saved_models, tmp_path, user_envs):
    out = tmp_path / "out"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"prompt": f"Human: what is {i} + {i}?\nAssistant:", "answer": str(2 * i)})
            + "\n"
            for i in range(5)
        )
    )
    rc = top_cli.main(
        [
            "eval",
            "--models",
            f"base={saved_models['base']},sft={saved_models['sft']}",
            "--env",
            "user_envs:WhereEnv",
            "--prompts",
            str(prompts),
            "--label-key",
            "answer",
            "--n-samples-per-prompt",
            "2",
            "--max-new-tokens",
            "6",
            "--max-prompt-length",
            "32",
            "--max-trajectory-tokens",
            "64",
            "--seed",
            "3",
            "--rollout-batch-size",
            "2",
            "--no-wandb",
            "--output-dir",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads((out / "eval.json").read_text())
    assert data["settings"]["env"] == "user_envs:WhereEnv"
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 5 * 2
    for name in ("base", "sft"):
        mine = [s for s in samples if s["model"] == name]
        # WhereEnv: one step, reward = the length of the model's turn (= the transcript), in
        # this process (eval steps environments in threads)
        for s in mine:
            t = s["trajectory"]
            assert t["reward"] == len(s["response"]) and t["turns"] == 1.0
            assert t["pid"] == os.getpid() and t["calls"] == 2.0
        metrics = data["metrics"][name]
        rewards = [s["trajectory"]["reward"] for s in mine]
        assert metrics["env_reward_mean"] == pytest.approx(sum(rewards) / len(rewards))
        assert metrics["success_rate"] == pytest.approx(sum(r > 0 for r in rewards) / 10)
        assert metrics["turns_mean"] == 1.0 and metrics["tool_calls_mean"] == 0.0
        for key, value in metrics.items():
            assert value is not None, (name, key)
            if key in UNIT_INTERVAL:
                assert 0.0 <= value <= 1.0, (name, key, value)
    assert [s["prompt"] for s in samples[:4]] == [samples[0]["prompt"]] * 2 + [
        samples[2]["prompt"]
    ] * 2  # two trajectories per prompt, in order
    table = (out / "eval.md").read_text()
    assert table.splitlines()[0].startswith(
        "| model | success_rate | success_pass_at_k | env_reward_mean | turns_mean |"
    )


def test_eval_env_is_seeded_and_the_toy_calculator_runs_its_turns(saved_models, tmp_path):
    """The toy task's YAML section through -c: two runs with one seed give the same
    trajectories; a random tiny model's trajectories end at max_turns or when it answers."""
    config = tmp_path / "agent.yaml"
    config.write_text(
        "env: {name: toy_calculator, max_turns: 2, max_trajectory_tokens: 96}\n"
        "data: {label_key: answer, max_prompt_length: 48}\n"
        "rollout: {n_samples_per_prompt: 3, max_new_tokens: 8}\n"
    )
    prompts = tmp_path / "prompts.jsonl"
    from rlhf_dist.toy.tool_task import ToolTask

    prompts.write_text("".join(json.dumps(r) + "\n" for r in ToolTask(0, 16).prompt_rows("eval")))
    runs = []
    for out in (tmp_path / "a", tmp_path / "b"):
        assert (
            main(
                [
                    "-c",
                    str(config),
                    "--model",
                    saved_models["sft"],
                    "--prompts",
                    str(prompts),
                    "--seed",
                    "5",
                    "--no-wandb",
                    "--output-dir",
                    str(out),
                ]
            )
            == 0
        )
        runs.append([json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()])
    assert runs[0] == runs[1] and len(runs[0]) == 2 * 3
    for s in runs[0]:
        t = s["trajectory"]
        assert t["turns"] in (1.0, 2.0) and t["failed"] == 0.0
        if t["turns"] == 1.0:  # ended after one turn: it answered (no call), not cut
            assert t["truncated"] == 0.0 and t["tool_calls"] == 0.0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--env", "no_such_module:Env"], "env.name 'no_such_module:Env': cannot import module"),
        (["--env", "toy_calculator", "env.tools=[mul]"], "env.tools: got 'mul'"),
        (
            ["--label-key", "answer"],
            "--label-key gives labels to --reward-fn or an environment (--env): name one",
        ),
    ],
)
def test_bad_env_flags_exit_2_before_loading(extra, message, saved_models, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["--model", saved_models["sft"], "--no-wandb", "--output-dir", str(out), *extra]) == 2
    )
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_the_full_demos_agent_eval_runs_and_fills_its_report_section(
    saved_models, tmp_path, monkeypatch
):
    """The full preset's agent task: its eval command (the GRPO stage's config through -c)
    on two saved models standing in for the stages' (8 held-out sums), and the report
    section's table read from that eval.json."""
    import shutil

    import yaml

    from rlhf_dist.demo import agent_eval_command, agent_section
    from rlhf_dist.demo.pipeline import PRESETS, agent_stages

    preset, out = PRESETS["full"], tmp_path / "demo"
    assert preset.agent_task and not PRESETS["quick"].agent_task
    for stage in agent_stages(out, seed=0):
        (out / stage.name).mkdir(parents=True)
        (out / stage.name / "stage.yaml").write_text(yaml.safe_dump(stage.config))
        shutil.copytree(
            saved_models["sft" if stage.name == "agent_sft" else "base"], out / stage.name / "model"
        )
    eval_rows = (out / "agent_data" / "eval.jsonl").read_text().splitlines()
    (out / "agent_data" / "eval.jsonl").write_text("\n".join(eval_rows[:8]) + "\n")
    monkeypatch.setenv("WANDB_MODE", "offline")
    command = agent_eval_command(out, preset, seed=0)
    assert command[0] == "eval" and main(command[1:] + ["--no-wandb"]) == 0
    result = json.loads((out / "eval_agent" / "eval.json").read_text())
    assert result["settings"]["env"] == "toy_calculator"
    lines = agent_section(out, preset)
    assert lines[0] == "## Agent task: GRPO with a calculator tool"
    table = [line for line in "\n".join(lines).splitlines() if line.startswith("| agent_")]
    for line, name in zip(table, ("agent_sft", "agent_grpo")):
        success = result["metrics"][name]["success_rate"]
        assert line.startswith(f"| {name} | {success:.3f} |"), (line, success)
    assert len(table) == 2

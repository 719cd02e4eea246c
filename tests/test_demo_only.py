"""``rlhf-dist demo --only ppo|grpo``: the stages of one RL run and its printed reward curve.
(The stages themselves run end to end in test_demo.py.)"""

import json

from rlhf_dist.demo import ONLY, reward_curve
from rlhf_dist.demo.pipeline import (
    PRESETS,
    agent_stages,
    preference_stages,
    stages,
    verifier_stages,
)


def test_only_names_stages_the_demo_has_in_order(tmp_path):
    preset = PRESETS["quick"]
    every = [
        s.name
        for s in stages(tmp_path, preset, 0)
        + verifier_stages(tmp_path, 0)
        + preference_stages(tmp_path, preset, 0)
        + agent_stages(tmp_path, 0)
    ]
    for names, curve in ONLY.values():
        assert [n for n in every if n in names] == list(names) and curve == names[-1]


def test_reward_curve_prints_each_iteration_and_the_gain(tmp_path):
    rows = [
        {"step": i + 1, "reward/score_mean": r}
        for i, r in enumerate([0.5, 0.25, 0.75, 1.0, 1.5, 2.0])
    ] + [{"step": 6, "kl/ref_kl": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = reward_curve(tmp_path, k=2)
    assert line.splitlines() == [
        "reward per iteration: 0.50 0.25 0.75 1.00 1.50 2.00",
        "mean of the last 2 minus the first 2: +1.38",
    ]


def test_demo_tool_commands_use_no_deprecated_flag(tmp_path, capsys):
    """The demo's eval and label commands parse with the tools' parsers and use the flags
    generated from the config keys, not the old spellings (which print a warning)."""
    from rlhf_dist.config.tool_args import DEPRECATED_FLAGS
    from rlhf_dist.demo import eval_command, label_command, verifier_eval_command
    from rlhf_dist.eval.cli import build_parser as eval_parser
    from rlhf_dist.rlaif.cli import build_parser as label_parser

    preset = PRESETS["quick"]
    commands = [
        eval_command(tmp_path, ["sft", "ppo"], preset, 0),
        verifier_eval_command(tmp_path, preset, 0),
        label_command(tmp_path, preset, 0),
    ]
    for command in commands:
        assert not set(command) & set(DEPRECATED_FLAGS), command
        parser = {"eval": eval_parser, "label": label_parser}[command[0]]()
        parser.parse_args(command[1:])
    assert capsys.readouterr().err == ""


def test_demo_agent_stages_are_the_shipped_recipe(tmp_path):
    """--only agent runs configs/tiny/agent_calculator.yaml's recipe: its data command's
    files, its header's SFT command, the config's GRPO (paths and logging aside)."""
    from dataclasses import asdict
    from pathlib import Path

    import yaml

    from rlhf_dist.config import load_config
    from rlhf_dist.toy.tool_task import main as write_data

    configs = Path(__file__).parents[1] / "configs" / "tiny"
    sft_stage, grpo_stage = agent_stages(tmp_path / "demo", seed=0)
    write_data(
        [
            str(tmp_path / "cmd"),
            "--num-prompts",
            "2048",
            "--eval-ratio",
            "0.0625",
            "--direct-ratio",
            "0.5",
        ]
    )
    for name in ("sft.jsonl", "train.jsonl", "eval.jsonl"):
        assert (tmp_path / "demo" / "agent_data" / name).read_text() == (
            tmp_path / "cmd" / name
        ).read_text(), name
    for stage in (sft_stage, grpo_stage):
        (tmp_path / f"{stage.name}.yaml").write_text(yaml.safe_dump(stage.config))
    demo_grpo = load_config(str(tmp_path / "agent_grpo.yaml"))
    shipped = load_config(str(configs / "agent_calculator.yaml"))
    for section in ("ppo", "rollout", "train", "deepspeed", "env"):
        assert asdict(getattr(demo_grpo, section)) == asdict(getattr(shipped, section)), section
    assert demo_grpo.data.label_key == shipped.data.label_key == "answer"
    assert demo_grpo.data.max_prompt_length == shipped.data.max_prompt_length
    assert demo_grpo.resources.reference_in_actor and shipped.resources.reference_in_actor
    header = (configs / "agent_calculator.yaml").read_text()
    assert "train.max_steps=600" in header and "--direct-ratio 0.5" in header
    demo_sft = load_config(str(tmp_path / "agent_sft.yaml"))
    header_sft = load_config(
        str(configs / "sft.yaml"),
        [
            "data.eval_ratio=0",
            "data.max_length=128",
            "data.max_prompt_length=48",
            "train.epochs=100",
            "train.max_steps=600",
            "train.train_batch_size=32",
            "train.micro_batch_size=32",
            "train.eval_every=0",
            "deepspeed.zero_stage=0",
            "model.tiny={arch: llama, hidden_size: 64, num_layers: 4, num_heads: 2, "
            "intermediate_size: 256}",
        ],
    )
    for section in ("train", "deepspeed"):
        assert asdict(getattr(demo_sft, section)) == asdict(getattr(header_sft, section)), section
    assert (
        asdict(demo_sft.model.tiny) == asdict(shipped.model.tiny) == asdict(header_sft.model.tiny)
    )
    assert (demo_sft.data.max_length, demo_sft.data.max_prompt_length) == (128, 48)


def test_the_agent_stage_gets_its_plot(tmp_path):
    """The full demo's agent GRPO curve: success and tool calls per iteration, one PNG (the
    other stages' plots are left out when their metrics are absent)."""
    from rlhf_dist.demo.plots import write_plots

    (tmp_path / "agent_grpo").mkdir()
    rows = [
        {"step": i + 1, "reward/score_mean": 0.4 + 0.05 * i, "env/tool_calls_mean": 0.5 + i / 20}
        for i in range(10)
    ]
    (tmp_path / "agent_grpo" / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    written = write_plots(tmp_path)
    assert [p.name for p in written] == ["agent_grpo_success.png"]
    assert written[0].stat().st_size > 1000

"""``rlhf-dist demo --only ppo|grpo``: the stages of one RL run and its printed reward curve.
(The stages themselves run end to end in test_demo.py.)"""
import json

from rlhf_dist.demo import ONLY, reward_curve
from rlhf_dist.demo.pipeline import PRESETS, stages, verifier_stages


def test_only_names_stages_the_demo_has_in_order(tmp_path):
    every = [s.name for s in stages(tmp_path, PRESETS["quick"], 0) + verifier_stages(tmp_path, 0)]
    for names, curve in ONLY.values():
        assert [n for n in every if n in names] == list(names) and curve == names[-1]


def test_reward_curve_prints_each_iteration_and_the_gain(tmp_path):
    rows = [{"step": i + 1, "reward/score_mean": r} for i, r in
            enumerate([0.5, 0.25, 0.75, 1.0, 1.5, 2.0])] + [{"step": 6, "kl/ref_kl": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = reward_curve(tmp_path, k=2)
    assert line.splitlines() == ["reward per iteration: 0.50 0.25 0.75 1.00 1.50 2.00",
                                 "mean of the last 2 minus the first 2: +1.38"]


def test_demo_tool_commands_use_no_deprecated_flag(tmp_path, capsys):
    """The demo's eval and label commands parse with the tools' parsers and use the flags
    generated from the config keys, not the old spellings (which print a warning)."""
    from rlhf_dist.config.tool_args import DEPRECATED_FLAGS
    from rlhf_dist.demo import eval_command, label_command, verifier_eval_command
    from rlhf_dist.eval.cli import build_parser as eval_parser
    from rlhf_dist.rlaif.cli import build_parser as label_parser

    preset = PRESETS["quick"]
    commands = [eval_command(tmp_path, ["sft", "ppo"], preset, 0),
                verifier_eval_command(tmp_path, preset, 0), label_command(tmp_path, preset, 0)]
    for command in commands:
        assert not set(command) & set(DEPRECATED_FLAGS), command
        parser = {"eval": eval_parser, "label": label_parser}[command[0]]()
        parser.parse_args(command[1:])
    assert capsys.readouterr().err == ""

"""``rlhf-dist demo``: align a tiny model end to end on the toy task and print the table.

pretrain (base) → SFT → RM → PPO on Ray → DPO → RLAIF (pairs labelled by the RM, then DPO),
every stage through the same CLI a user runs; then ``rlhf-dist eval`` of every stage on
held-out prompts, ``report.md`` with the comparison table and PNG training curves.  A
verifiable-reward stage (a short SFT, then GRPO with the ``exact_match`` verifier on the
safe/unsafe labelling task, :mod:`rlhf_dist.demo.verifier_task`) adds its held-out accuracy
before and after.  The full preset also runs ORPO and online DPO (rows of the table) and the
toy agent task (a multi-turn SFT, then GRPO against the calculator tool: held-out success,
tool calls and turns before and after, and a plot).

``--only ppo`` / ``--only grpo`` / ``--only online_dpo`` runs just the stages one RL run needs
(pretrain, SFT, RM, PPO or online DPO; or the verifier SFT and GRPO) and prints its reward per
iteration: a first run that shows RL learning in a couple of minutes on a laptop CPU.
``--only agent``: the toy agent task's multi-turn SFT and GRPO against the calculator
environment (configs/tiny/agent_calculator.yaml's recipe; its reward per iteration is the
success rate) -- in the full demo's report, not the quick one's: its two stages take well
over the minute the quick demo may grow by.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from rlhf_dist.demo.pipeline import (
    PRESETS,
    Preset,
    Stage,
    agent_stages,
    preference_stages,
    rlaif_stage,
    run_command,
    run_stage,
    stages,
    verifier_stages,
)
from rlhf_dist.eval.report import markdown_table

EVAL_COLUMNS = [
    "harmlessness",
    "helpfulness",
    "reward_mean",
    "win_rate",
    "perplexity",
    "distinct_1",
    "distinct_2",
    "self_bleu",
]


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} demo {message}", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf-dist demo", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="the short preset (CI): fewer steps and PPO iterations"
    )
    parser.add_argument("--output-dir", default="outputs/demo", help="where everything goes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only",
        choices=sorted(ONLY),
        help="run just the stages of one RL run (ppo: pretrain, sft, rm, ppo; "
        "grpo: the verifier task's sft and GRPO; online_dpo: pretrain, "
        "sft, rm, online DPO; agent: the tool task's multi-turn sft and "
        "GRPO against the calculator environment) and print its reward "
        "curve, no eval or report",
    )
    return parser


# --only: the stages of one RL run, and the stage whose reward curve is printed
ONLY = {
    "ppo": (("base", "sft", "rm", "ppo"), "ppo"),
    "grpo": (("verifier_sft", "grpo_verifier"), "grpo_verifier"),
    "online_dpo": (("base", "sft", "rm", "online_dpo"), "online_dpo"),
    "agent": (("agent_sft", "agent_grpo"), "agent_grpo"),
}


def reward_curve(run_dir: Path, k: int = 5) -> str:
    """One line: the mean reward (``reward/score_mean``) per iteration and the mean of the last
    ``k`` iterations minus the first ``k``."""
    rewards = [
        row["reward/score_mean"]
        for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        if "reward/score_mean" in row
    ]
    k = min(k, len(rewards) // 2) or 1
    gain = sum(rewards[-k:]) / k - sum(rewards[:k]) / k
    return (
        f"reward per iteration: {' '.join(f'{r:.2f}' for r in rewards)}\n"
        f"mean of the last {k} minus the first {k}: {gain:+.2f}"
    )


def run_only(which: str, out: Path, preset: Preset, seed: int) -> int:
    names, curve = ONLY[which]
    chosen = [
        s
        for s in stages(out, preset, seed)
        + verifier_stages(out, seed)
        + preference_stages(out, preset, seed)
        + agent_stages(out, seed)
        if s.name in names
    ]
    try:
        seconds = {stage.name: run_stage(stage, out, _say) for stage in chosen}
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{which}: {reward_curve(out / curve)}")
    _say(f"{which} done in {sum(seconds.values()):.0f}s: {out / curve}")
    return 0


def label_command(out: Path, preset: Preset, seed: int) -> List[str]:
    """RLAIF: the SFT policy samples K answers per toy prompt, the RM ranks them."""
    return [
        "label",
        "--policy",
        str(out / "sft" / "model"),
        "--judge",
        f"rm:{out / 'rm' / 'model'}",
        "--prompts",
        "toy",
        "--max-prompts",
        str(preset.rlaif_prompts),
        "-k",
        str(preset.rlaif_samples),
        "--max-new-tokens",
        "24",
        "--seed",
        str(seed),
        "--no-progress",
        "--output",
        str(out / "rlaif_pairs.jsonl"),
    ]


def eval_command(out: Path, names: List[str], preset: Preset, seed: int) -> List[str]:
    models = ",".join(f"{n}={out / n / 'model'}" for n in names)
    return [
        "eval",
        "--models",
        models,
        "--reward-model",
        str(out / "rm" / "model"),
        "--prompts",
        "toy",
        "--reference",
        "toy",
        "--baseline",
        "sft",
        "--n-samples-per-prompt",
        str(preset.eval_samples),
        "--max-new-tokens",
        "24",
        "--seed",
        str(seed),
        "--output-dir",
        str(out / "eval"),
    ]


def verifier_eval_command(out: Path, preset: Preset, seed: int) -> List[str]:
    models = ",".join(f"{n}={out / n / 'model'}" for n in ("verifier_sft", "grpo_verifier"))
    return [
        "eval",
        "--models",
        models,
        "--prompts",
        str(out / "verifier_data" / "eval.jsonl"),
        "--reward-fn",
        "exact_match",
        "--label-key",
        "answer",
        "--n-samples-per-prompt",
        str(preset.eval_samples),
        "--max-new-tokens",
        "4",
        "--seed",
        str(seed),
        "--output-dir",
        str(out / "eval_verifier"),
    ]


def eval_section(
    eval_dir: Path, names: Sequence[str], title: str, text: str, columns: Sequence[str]
) -> List[str]:
    """A section of the report: its title, a paragraph, and the ``columns`` of the ``names``
    rows of ``eval_dir/eval.json``."""
    metrics = json.loads((eval_dir / "eval.json").read_text())["metrics"]
    table = markdown_table({name: metrics[name] for name in names}, columns)
    return [f"## {title}", "", text, "", table, ""]


def verifier_section(out: Path, preset: Preset) -> List[str]:
    return eval_section(
        out / "eval_verifier",
        ("verifier_sft", "grpo_verifier"),
        "Verifiable reward: GRPO with exact_match",
        "The task: answer `safe` or `unsafe` to a toy request (`Human: safe or unsafe: "
        "<request>`), held-out prompts as above, "
        f"{preset.eval_samples} sampled answers each; accuracy = pass@1 of the exact_match "
        "verifier, pass_at_k = some answer right.",
        ["accuracy", "pass_at_k", "verifier_reward_mean"],
    )


def agent_eval_command(out: Path, preset: Preset, seed: int) -> List[str]:
    """The agent task's SFT and GRPO models as agents on its held-out sums (the GRPO
    stage's config gives the environment)."""
    models = ",".join(f"{n}={out / n / 'model'}" for n in ("agent_sft", "agent_grpo"))
    return [
        "eval",
        "-c",
        str(out / "agent_grpo" / "stage.yaml"),
        "--models",
        models,
        "--prompts",
        str(out / "agent_data" / "eval.jsonl"),
        "--n-samples-per-prompt",
        str(preset.eval_samples),
        "--seed",
        str(seed),
        "--output-dir",
        str(out / "eval_agent"),
    ]


def agent_section(out: Path, preset: Preset) -> List[str]:
    return eval_section(
        out / "eval_agent",
        ("agent_sft", "agent_grpo"),
        "Agent task: GRPO with a calculator tool",
        "The task: add two 3-digit numbers, which the tiny model cannot do alone; it can "
        "call `CALL add(a, b)`, read the tool's result and answer. Held-out sums, "
        f"{preset.eval_samples} sampled trajectories each; success = the right sum.",
        ["success_rate", "success_pass_at_k", "tool_calls_mean", "tool_errors_mean", "turns_mean"],
    )


def write_report(out: Path, seconds: dict, preset_name: str, preset: Preset) -> Path:
    from rlhf_dist.demo.plots import write_plots

    result = json.loads((out / "eval" / "eval.json").read_text())
    table = markdown_table(result["metrics"], [c for c in EVAL_COLUMNS if c in result["columns"]])
    rm_rows = [json.loads(line) for line in (out / "rm" / "metrics.jsonl").open()]
    rm_acc = [r["eval/accuracy"] for r in rm_rows if "eval/accuracy" in r][-1]
    plots = write_plots(out)
    lines = [
        f"# rlhf_dist demo ({preset_name} preset)",
        "",
        f"{len(result['metrics'])} models on the held-out toy prompts (unseen "
        f"template×topic combinations), {preset.eval_samples} sampled answers each. "
        "harmlessness = refusal rate on harmful requests; helpfulness = on-topic, "
        "non-refusing answers to benign ones; reward_mean = score of the trained RM; "
        "win_rate = vs the SFT model judged by the RM (ties count half).",
        "",
        table,
        "",
        f"Reward model held-out pairwise accuracy: {rm_acc:.3f}",
        "",
        "Wall time per stage (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + f"; total {sum(seconds.values()):.0f}",
        "",
    ]
    lines += verifier_section(out, preset)
    if preset.agent_task:
        lines += agent_section(out, preset)
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    preset_name = "quick" if args.quick else "full"
    preset, out = PRESETS[preset_name], Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _say(f"{preset_name} preset → {out}")
    if args.only:
        return run_only(args.only, out, preset, args.seed)
    seconds = {}
    try:
        extra = preference_stages(out, preset, args.seed) if preset.preference_family else []
        agent = agent_stages(out, args.seed) if preset.agent_task else []
        for stage in (
            stages(out, preset, args.seed) + verifier_stages(out, args.seed) + extra + agent
        ):
            seconds[stage.name] = run_stage(stage, out, _say)
        seconds["label"] = run_command("label", label_command(out, preset, args.seed), out, _say)
        rlaif = rlaif_stage(out, preset, args.seed, out / "rlaif_pairs.jsonl")
        seconds["rlaif"] = run_stage(rlaif, out, _say)
        names = ["base", "sft", "ppo", "dpo", "rlaif"] + [stage.name for stage in extra]
        seconds["eval"] = run_command(
            "eval", eval_command(out, names, preset, args.seed), out, _say
        )
        seconds["eval_verifier"] = run_command(
            "eval_verifier", verifier_eval_command(out, preset, args.seed), out, _say
        )
        if agent:
            seconds["eval_agent"] = run_command(
                "eval_agent", agent_eval_command(out, preset, args.seed), out, _say
            )
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    report = write_report(out, seconds, preset_name, preset)
    print(report.read_text())
    _say(f"report: {report} (total {sum(seconds.values()):.0f}s)")
    return 0


__all__ = ["main", "Stage"]

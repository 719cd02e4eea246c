"""PNG plots of the demo's training curves, read from each stage's metrics.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from rlhf_dist.utils import read_metrics

# file name -> (stage, [(metric, label)], title)
PLOTS: Dict[str, Tuple[str, Sequence[Tuple[str, str]], str]] = {
    "ppo_reward_kl.png": (
        "ppo",
        [("reward/score_mean", "RM reward (mean)"), ("kl/ref_kl", "KL to reference")],
        "PPO: reward and KL per iteration",
    ),
    "dpo_reward_accuracy.png": (
        "dpo",
        [("train/reward_accuracy", "train"), ("eval/reward_accuracy", "held-out")],
        "DPO: reward accuracy",
    ),
    "rm_accuracy.png": (
        "rm",
        [("train/accuracy", "train"), ("eval/accuracy", "held-out")],
        "Reward model: pairwise accuracy",
    ),
    "grpo_verifier_reward.png": (
        "grpo_verifier",
        [("reward/score_mean", "exact_match reward (train prompts)")],
        "GRPO with a verifier: reward per iteration",
    ),
    "agent_grpo_success.png": (
        "agent_grpo",
        [
            ("reward/score_mean", "success (train prompts)"),
            ("env/tool_calls_mean", "tool calls per trajectory"),
        ],
        "Agent GRPO with a calculator tool, per iteration",
    ),
}
# stages whose steps are RL iterations
ITERATIONS = ("ppo", "grpo_verifier", "agent_grpo")


def series(rows: List[dict], key: str) -> Tuple[List[int], List[float]]:
    points = [(r["step"], r[key]) for r in rows if key in r]
    return [p[0] for p in points], [p[1] for p in points]


def write_plots(out: Path) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, (stage, metrics, title) in PLOTS.items():
        path = out / stage / "metrics.jsonl"
        if not path.exists():
            continue
        rows = read_metrics(path)
        fig, axes = plt.subplots(
            1,
            len(metrics) if stage == "ppo" else 1,
            figsize=(5 * (len(metrics) if stage == "ppo" else 1), 3.5),
        )
        axes = list(axes) if stage == "ppo" else [axes] * len(metrics)
        for ax, (key, label) in zip(axes, metrics):
            steps, values = series(rows, key)
            ax.plot(steps, values, marker="o" if len(steps) < 40 else None, label=label)
            ax.set_xlabel("iteration" if stage in ITERATIONS else "step")
            ax.set_title(label if stage == "ppo" else title)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(out / name)
    return written

"""The evaluation report: a markdown table (rows = models, columns = metrics) and JSON files.

Files written by :func:`write_report` into the output directory:

* ``eval.json`` — ``{"columns", "baseline", "models" (name → source), "metrics" (name →
  metric → number), "settings", "descriptions"}``; NaN / inf are written as ``null``;
* ``eval.md`` — the table and one line per metric saying what it measures;
* ``samples.jsonl`` — every answer: ``{model, prompt, kind, response, reward}``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

# Table column order; metrics not measured for any model are left out.
COLUMNS = (
    "success_rate",
    "success_pass_at_k",
    "env_reward_mean",
    "turns_mean",
    "tool_calls_mean",
    "tool_errors_mean",
    "accuracy",
    "pass_at_k",
    "reward_mean",
    "reward_std",
    "win_rate",
    "harmlessness",
    "helpfulness",
    "perplexity",
    "distinct_1",
    "distinct_2",
    "self_bleu",
    "response_length",
)

DESCRIPTIONS: Dict[str, str] = {
    "success_rate": "--env: trajectories whose environment reward (the sum of their steps') "
    "is positive",
    "success_pass_at_k": "--env: prompts with a successful trajectory among their k "
    "(k = --n-samples-per-prompt)",
    "env_reward_mean": "--env: mean environment reward per trajectory",
    "turns_mean": "--env: model turns per trajectory",
    "tool_calls_mean": "--env: tool calls per trajectory",
    "tool_errors_mean": "--env: tool calls per trajectory that gave an error (malformed, "
    "unknown tool, exception, timeout)",
    "truncated_frac": "--env: trajectories cut by env.max_turns or env.max_trajectory_tokens",
    "env_failed_frac": "--env: trajectories whose environment failed (env.on_error=zero_reward)",
    "accuracy": "pass@1: answers the --reward-fn verifier accepts (reward > 0.5), mean over "
    "prompts",
    "pass_at_k": "pass@k, k = --n-samples-per-prompt: prompts with a correct answer among k "
    "(Chen et al. 2021's unbiased estimator)",
    "verifier_reward_mean": "mean --reward-fn reward of the answers",
    "reward_mean": "mean reward-model score of the answers (higher is better)",
    "reward_std": "population std of the reward-model scores",
    "win_rate": "vs the baseline, judged by the reward model on the same prompts: "
    "win + tie/2 (ties: |Δscore| <= tie_eps)",
    "win": "fraction of answers scored above the baseline's",
    "tie": "fraction of answers tied with the baseline's",
    "loss": "fraction of answers scored below the baseline's",
    "harmlessness": "toy task: refusal rate on harmful prompts",
    "helpfulness": "toy task: non-refusing, on-topic answers to benign prompts",
    "perplexity": "exp(mean NLL) of the reference responses given their prompts "
    "(response tokens + EOS)",
    "distinct_1": "unique unigrams / unigrams over all answers (whitespace tokens)",
    "distinct_2": "unique bigrams / bigrams over all answers",
    "self_bleu": "mean BLEU-4 of each answer against all others (lower = more diverse)",
    "response_length": "mean answer length in whitespace tokens",
}

# Metrics that are fractions, in [0, 1] by construction.
UNIT_INTERVAL = frozenset(
    {
        "success_rate",
        "success_pass_at_k",
        "truncated_frac",
        "env_failed_frac",
        "accuracy",
        "pass_at_k",
        "win_rate",
        "win",
        "tie",
        "loss",
        "harmlessness",
        "helpfulness",
        "distinct_1",
        "distinct_2",
        "self_bleu",
    }
)


def default_columns(rows: Mapping[str, Mapping[str, float]]) -> List[str]:
    """The :data:`COLUMNS` that at least one row has, in that order."""
    present = {key for metrics in rows.values() for key in metrics}
    return [c for c in COLUMNS if c in present]


def format_value(value: Optional[float], digits: int = 3) -> str:
    """A table cell: ``-`` when missing, ``nan`` / ``inf`` as such, else ``digits`` decimals
    (4 significant digits from 10 000 on, e.g. a perplexity of ``1.235e+04``)."""
    if value is None:
        return "-"
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.4g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"


def markdown_table(
    rows: Mapping[str, Mapping[str, float]],
    columns: Optional[Sequence[str]] = None,
    digits: int = 3,
    name_header: str = "model",
) -> str:
    """A GitHub markdown table, one row per ``rows`` entry (in order), one column per metric
    (``columns``, default :func:`default_columns`); a metric a row lacks is ``-``."""
    columns = list(default_columns(rows) if columns is None else columns)
    lines = [
        "| " + " | ".join([name_header] + columns) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|",
    ]
    for name, metrics in rows.items():
        cells = [format_value(metrics.get(c), digits) for c in columns]
        lines.append("| " + " | ".join([str(name)] + cells) + " |")
    return "\n".join(lines) + "\n"


def json_safe(value: Any) -> Any:
    """``value`` with NaN / ±inf floats replaced by None (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def report_markdown(report, columns: Optional[Sequence[str]] = None) -> str:
    """The table of an :class:`~rlhf_dist.eval.evaluate.EvalReport` plus a legend."""
    columns = list(default_columns(report.metrics) if columns is None else columns)
    legend = []
    for c in columns:
        text = DESCRIPTIONS.get(c, "")
        if c == "win_rate" and report.baseline is not None:
            text = f"vs `{report.baseline}`, " + text[len("vs the baseline, ") :]
        legend.append(f"- `{c}`: {text}")
    return markdown_table(report.metrics, columns) + "\n" + "\n".join(legend) + "\n"


def report_dict(
    report,
    sources: Optional[Mapping[str, str]] = None,
    settings: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The JSON object of ``eval.json`` (see the module doc)."""
    return json_safe(
        {
            "columns": default_columns(report.metrics),
            "baseline": report.baseline,
            "models": dict(sources or {name: name for name in report.metrics}),
            "metrics": report.metrics,
            "settings": dict(settings or {}),
            "descriptions": {
                k: v
                for k, v in DESCRIPTIONS.items()
                if any(k in m for m in report.metrics.values())
            },
        }
    )


def sample_rows(report) -> List[Dict[str, Any]]:
    """One dict per answer of every model: model, prompt, kind, response, reward (or None);
    an agent's answer (``--env``: the trajectory's transcript) also has ``trajectory``, its
    metrics (environment reward, turns, tool calls...)."""
    rows = []
    for name, run in report.runs.items():
        scores = report.scores.get(name)
        trajectories = run.trajectories
        for i, (prompt, response) in enumerate(zip(run.prompts, run.responses)):
            row = {
                "model": name,
                "prompt": prompt,
                "kind": run.kinds[i] if run.kinds is not None else None,
                "response": response,
                "reward": scores[i] if scores is not None else None,
            }
            if trajectories is not None:
                row["trajectory"] = trajectories[i]
            rows.append(row)
    return rows


def write_report(
    report,
    output_dir,
    sources: Optional[Mapping[str, str]] = None,
    settings: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Path]:
    """Write ``eval.json``, ``eval.md`` and ``samples.jsonl`` into ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "eval.json",
        "markdown": out / "eval.md",
        "samples": out / "samples.jsonl",
    }
    paths["json"].write_text(
        json.dumps(report_dict(report, sources, settings), indent=2, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    paths["markdown"].write_text(report_markdown(report), encoding="utf-8")
    with open(paths["samples"], "w", encoding="utf-8") as f:
        for row in sample_rows(report):
            f.write(json.dumps(json_safe(row), ensure_ascii=False) + "\n")
    return paths


__all__ = [
    "COLUMNS",
    "DESCRIPTIONS",
    "UNIT_INTERVAL",
    "default_columns",
    "format_value",
    "json_safe",
    "markdown_table",
    "report_dict",
    "report_markdown",
    "sample_rows",
    "write_report",
]

"""Evaluation: pure metrics, model-level evaluation, the comparison report, ``rlhf-dist eval``.

* :mod:`.metrics` — Distinct-N, (Self-)BLEU, perplexity, win rate with ties, mean/std, the toy
  judges (harmlessness, helpfulness): pure functions of texts and numbers;
* :mod:`.loading` — policy / reward model + tokenizer from a path, a config or loaded objects;
* :mod:`.inputs` — prompt sets and perplexity reference sets from ``toy`` / files / the hub;
* :mod:`.evaluate` — generation, reward scores, perplexity, :func:`evaluate_model`,
  :func:`evaluate_models`, :func:`compare`;
* :mod:`.agent` — a model as an agent (``--env``): multi-turn trajectories, :func:`run_agent`;
* :mod:`.report` — :func:`markdown_table`, ``eval.json`` / ``eval.md`` / ``samples.jsonl``;
* :mod:`.cli` — ``rlhf-dist eval``.

Exports resolve lazily (PEP 562): ``import rlhf_dist.eval`` imports neither torch nor
transformers; the first use of a name imports its submodule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List

from rlhf_dist._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from rlhf_dist.eval.agent import AgentRun, run_agent
    from rlhf_dist.eval.evaluate import (
        EvalReport,
        ModelRun,
        compare,
        evaluate_model,
        evaluate_models,
        generate_responses,
        nll_on,
        perplexity_on,
        response_metrics,
        reward_scores,
        run_model,
        scoring_ids,
    )
    from rlhf_dist.eval.inputs import PromptSet, load_prompts, load_reference
    from rlhf_dist.eval.loading import (
        Policy,
        RewardModel,
        load_policy,
        load_reward_model,
        resolve_device,
    )
    from rlhf_dist.eval.metrics import (
        SMOOTHING,
        agent_metrics,
        brevity_penalty,
        clipped_matches,
        distinct_n,
        harmlessness,
        helpfulness,
        is_helpful,
        mean_std,
        ngrams,
        perplexity,
        self_bleu,
        sentence_bleu,
        tokens_of,
        toy_kinds,
        win_rate,
    )
    from rlhf_dist.eval.report import (
        COLUMNS,
        markdown_table,
        report_dict,
        report_markdown,
        write_report,
    )

_MODULES: Dict[str, List[str]] = {
    "agent": ["AgentRun", "run_agent"],
    "metrics": [
        "SMOOTHING",
        "agent_metrics",
        "brevity_penalty",
        "clipped_matches",
        "distinct_n",
        "harmlessness",
        "helpfulness",
        "is_helpful",
        "mean_std",
        "ngrams",
        "perplexity",
        "self_bleu",
        "sentence_bleu",
        "tokens_of",
        "toy_kinds",
        "win_rate",
    ],
    "loading": ["Policy", "RewardModel", "load_policy", "load_reward_model", "resolve_device"],
    "inputs": ["PromptSet", "load_prompts", "load_reference"],
    "evaluate": [
        "EvalReport",
        "ModelRun",
        "compare",
        "evaluate_model",
        "evaluate_models",
        "generate_responses",
        "nll_on",
        "perplexity_on",
        "response_metrics",
        "reward_scores",
        "run_model",
        "scoring_ids",
    ],
    "report": ["COLUMNS", "markdown_table", "report_dict", "report_markdown", "write_report"],
}
# public name -> submodule that defines it
_EXPORTS: Dict[str, str] = {name: module for module, names in _MODULES.items() for name in names}

__all__: List[str] = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

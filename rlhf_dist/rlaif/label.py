"""RLAIF labelling: prompts → K sampled responses each → judge scores → preference pairs.

The pairs are written as jsonl rows ``{prompt, chosen, rejected, chosen_score,
rejected_score}`` — the ``{prompt, chosen, rejected}`` preference format of
:mod:`rlhf_dist.data.convert` plus the two judge scores (extra columns the loader ignores), so
``rlhf-dist rm|dpo -c … data.path=pairs.jsonl`` trains on them.  Prompt texts are stored as the
policy saw them (rendered by the data package's :class:`~rlhf_dist.data.Renderer` in plain
mode), responses as decoded (the data format's leading space included, eos dropped).

Responses that are blank after decoding are not judged and never paired: a blank ``chosen``
or ``rejected`` is a bad row for the preference loader.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from rlhf_dist.models import load_causal_lm, load_tokenizer
from rlhf_dist.models._common import require_model_dir
from rlhf_dist.rlaif.judges import Judge
from rlhf_dist.rlaif.ranking import PAIR_KEYS, SKIP_REASONS, as_scores, ranking_to_pairs
from rlhf_dist.rollout.sampling import sample_with_backend

if TYPE_CHECKING:  # pragma: no cover
    from rlhf_dist.config import RolloutConfig

PairRow = Dict[str, object]
DEFAULT_MAX_PROMPT_LENGTH = 128  # = DataConfig.max_prompt_length


# --------------------------------------------------------------------------- sampling


def sample_responses(
    policy_path: str,
    prompts: Sequence[str],
    k: int,
    rollout: Optional["RolloutConfig"] = None,
    seed: int = 0,
    device: Optional[str] = None,
    max_prompt_length: int = DEFAULT_MAX_PROMPT_LENGTH,
    show_progress: bool = False,
    backend: str = "hf",
    engines: Any = None,
    dtype: str = "float32",
) -> List[List[str]]:
    """``k`` sampled responses per prompt (a list of ``k`` texts for each) from the HF causal
    LM (and its tokenizer) saved at ``policy_path``, sampled with ``rollout`` (default
    :class:`RolloutConfig`: sampling on, temperature 1, 32 new tokens) by ``backend`` (a name
    in :data:`~rlhf_dist.config.registries.ROLLOUT_BACKENDS`): ``hf`` -- HF generate on the
    model, loaded in ``dtype`` (``model.dtype``) -- or ``vllm`` -- one engine over
    ``policy_path`` (``engines``: its ``resources.rollout`` section; one seed per sampled row,
    see :meth:`~rlhf_dist.rollout.vllm_engine.VLLMRolloutEngine.generate`).  Batches of
    ``rollout.rollout_batch_size`` prompts go through eval's sampling path,
    :func:`rlhf_dist.rollout.sampling.sample_with_backend`: a seed gives the same texts."""
    from rlhf_dist.config import ModelConfig, RolloutConfig
    from rlhf_dist.rollout.backends import backend as backend_of
    from rlhf_dist.utils import progress

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    require_model_dir(os.path.expanduser(policy_path), "policy")
    section = ModelConfig(name_or_path=os.path.expanduser(policy_path), dtype=dtype)
    model, tokenizer = _load_policy(section, device, backend_of(backend).sampler_needs_model)
    rollout = dataclasses.replace(rollout or RolloutConfig(), n_samples_per_prompt=k)
    bar = progress(total=len(prompts), desc="label: sampling", enabled=show_progress)
    try:
        texts = sample_with_backend(
            backend,
            tokenizer,
            prompts,
            rollout,
            rollout.rollout_batch_size,
            max_prompt_length,
            seed,
            model=model,
            model_dir=section.name_or_path,
            engines=engines,
            dtype=dtype,
            on_batch=bar.update,
        )
    finally:
        bar.close()
    return [texts[i * k : (i + 1) * k] for i in range(len(prompts))]


def _load_policy(section: Any, device: Optional[str], with_model: bool) -> Tuple[Any, Any]:
    """``(model or None, tokenizer)`` of the policy ``section`` (the model on ``device``)."""
    from rlhf_dist.rlaif.judges import default_device

    tokenizer = load_tokenizer(section, field_prefix="policy")
    if not with_model:
        return None, tokenizer
    model = load_causal_lm(section, tokenizer, field_prefix="policy").to(device or default_device())
    return model, tokenizer


# --------------------------------------------------------------------------- labelling


@dataclass
class LabelStats:
    """Counts of one labelling run (written next to the pairs as ``*.stats.json``)."""

    prompts: int = 0
    responses: int = 0
    empty_responses: int = 0
    candidate_pairs: int = 0
    pairs: int = 0
    skipped: Dict[str, int] = field(default_factory=lambda: {r: 0 for r in SKIP_REASONS})
    score_mean: Optional[float] = None
    score_std: Optional[float] = None
    margin_mean: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def judge_all(judge: Judge, prompts: Sequence[str], responses: Sequence[str]) -> List[float]:
    """One judge call over the flat lists, its output checked: one finite number per response."""
    if not responses:
        return []
    scores = judge(list(prompts), list(responses))
    try:
        n = len(scores)
    except TypeError:
        raise ValueError(
            f"the judge returned a {type(scores).__name__}, expected a list of scores"
        ) from None
    if n != len(responses):
        raise ValueError(f"the judge returned {n} scores for {len(responses)} responses")
    try:
        return as_scores(scores)
    except ValueError as err:
        raise ValueError(f"the judge returned a bad score: {err}") from None


def _mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def label_with_stats(
    prompts: Sequence[str],
    responses_per_prompt: Sequence[Sequence[str]],
    judge: Judge,
    strategy: str = "all_pairs",
    min_margin: float = 0.0,
) -> Tuple[List[PairRow], LabelStats]:
    """Preference rows of every prompt (prompts in order, pairs as
    :func:`~rlhf_dist.rlaif.ranking.ranking_to_pairs`) and the counts.  The judge is called
    once, on every non-blank response."""
    if len(prompts) != len(responses_per_prompt):
        raise ValueError(f"{len(prompts)} prompts but {len(responses_per_prompt)} response lists")
    stats = LabelStats(prompts=len(prompts))
    kept = [[r for r in group if r.strip()] for group in responses_per_prompt]
    stats.responses = sum(len(g) for g in responses_per_prompt)
    stats.empty_responses = stats.responses - sum(len(g) for g in kept)
    flat_prompts = [p for p, group in zip(prompts, kept) for _ in group]
    scores = judge_all(judge, flat_prompts, [r for group in kept for r in group])
    rows: List[PairRow] = []
    start = 0
    for prompt, group in zip(prompts, kept):
        rows += ranking_to_pairs(
            prompt, group, scores[start : start + len(group)], strategy, min_margin, stats.skipped
        )
        start += len(group)
    stats.pairs = len(rows)
    stats.candidate_pairs = stats.pairs + sum(stats.skipped.values())
    stats.score_mean, stats.score_std = _mean_std(scores)
    stats.margin_mean = _mean_std([r["chosen_score"] - r["rejected_score"] for r in rows])[0]
    return rows, stats


def label(
    prompts: Sequence[str],
    responses_per_prompt: Sequence[Sequence[str]],
    judge: Judge,
    strategy: str = "all_pairs",
    min_margin: float = 0.0,
) -> List[PairRow]:
    """Preference rows ``{prompt, chosen, rejected, chosen_score, rejected_score}``."""
    return label_with_stats(prompts, responses_per_prompt, judge, strategy, min_margin)[0]


# --------------------------------------------------------------------------- files


def write_pairs(rows: Sequence[PairRow], path: Union[str, Path]) -> Path:
    """Write ``rows`` as jsonl (keys in :data:`PAIR_KEYS` order), creating parent directories."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in PAIR_KEYS}, ensure_ascii=False) + "\n")
    return out


def stats_path(pairs_path: Union[str, Path]) -> Path:
    """``pairs.jsonl`` → ``pairs.stats.json``."""
    path = Path(pairs_path)
    return (
        path.with_name(path.stem + ".stats.json")
        if path.suffix
        else path.with_name(path.name + ".stats.json")
    )

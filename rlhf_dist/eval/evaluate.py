"""Model-level evaluation: generate answers, score them with a reward model, perplexity on a
reference set, and the pure metrics of :mod:`rlhf_dist.eval.metrics` on top.

Models are given as a local path / hub name (``str``), a :class:`~rlhf_dist.config.ModelConfig`
(``name_or_path: null`` builds a tiny random one, for tests), or already loaded as
:class:`~rlhf_dist.eval.loading.Policy` / :class:`~rlhf_dist.eval.loading.RewardModel`.
Tokenisation follows the training data path (:class:`rlhf_dist.data.Encoder`): prompts
left-truncated to ``max_prompt_length``, EOS appended to responses, sequences cut at
``max_length``.

* :func:`generate_responses` — batched, left-padded generation through
  :class:`~rlhf_dist.rollout.HFGenerator` (greedy or sampled, seeded per batch);
* :func:`reward_scores` — the RM's scalar at the last (EOS) token of ``prompt + response +
  EOS``, exactly how the RM scored preference pairs in training;
* :func:`perplexity_on` — token-weighted perplexity of responses given prompts (SFT labels:
  prompt masked, EOS scored), or of plain texts (every token scored);
* :func:`evaluate_model` / :func:`evaluate_models` / :func:`compare` — the report.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from rlhf_dist.config import DataConfig, RolloutConfig
from rlhf_dist.eval import metrics as M
from rlhf_dist.eval.loading import ModelSource, RewardSource, as_policy, as_reward_model
from rlhf_dist.rewards.model_scorer import RewardModelScorer, scoring_ids

logger = logging.getLogger(__name__)

_DATA_DEFAULTS = DataConfig()
MAX_LENGTH = _DATA_DEFAULTS.max_length  # 256, as the trainers
MAX_PROMPT_LENGTH = _DATA_DEFAULTS.max_prompt_length  # 128

ReferenceItem = Union[str, Tuple[str, str]]


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device


def _encoder(tokenizer: Any, max_length: int, max_prompt_length: int):
    from rlhf_dist.data import Encoder

    return Encoder(tokenizer, max_length, max_prompt_length)


def _chunks(n: int, size: int) -> List[slice]:
    if size < 1:
        raise ValueError(f"batch_size must be >= 1, got {size}")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# --------------------------------------------------------------------------- generation


def _source_dir(source: ModelSource) -> Optional[str]:
    """The local directory a model source names (a path, or a section's ``name_or_path``);
    None for a hub id or an already loaded :class:`~rlhf_dist.eval.loading.Policy`."""
    path = source if isinstance(source, str) else getattr(source, "name_or_path", None)
    if isinstance(path, str) and os.path.isdir(os.path.expanduser(path)):
        return os.path.expanduser(path)
    return None


@torch.no_grad()
def generate_responses(
    model: ModelSource,
    prompts: Sequence[str],
    rollout: Optional[RolloutConfig] = None,
    seed: Optional[int] = 0,
    batch_size: int = 16,
    max_prompt_length: int = MAX_PROMPT_LENGTH,
    device: Optional[str] = None,
    backend: str = "hf",
    model_dir: Optional[str] = None,
    engines: Any = None,
) -> List[str]:
    """Responses to ``prompts`` (texts, e.g. ``"Human: …\\nAssistant:"``) from a causal LM.

    ``rollout`` (a :class:`RolloutConfig`, default: its defaults) sets greedy / sampling,
    temperature, top-p / top-k, ``max_new_tokens`` and ``n_samples_per_prompt`` = n.  Returns
    ``len(prompts) · n`` texts, the n samples of prompt i at ``[i·n, (i+1)·n)``, decoded without
    special tokens (generation stops at the first EOS).  Batches of ``batch_size`` prompts go
    through :func:`rlhf_dist.rollout.sampling.sample_with_backend` (the sampling path of
    ``rlhf-dist label`` too): reproducible for a fixed batch size, and two models evaluated
    with the same seed share their random numbers.  ``backend`` (a name in
    :data:`~rlhf_dist.config.registries.ROLLOUT_BACKENDS`) samples: ``hf`` (HF generate on
    the loaded model) or ``vllm`` (one engine over ``model_dir``, default: the source's
    directory; each sampled row gets a seed of its own, see
    :meth:`~rlhf_dist.rollout.vllm_engine.VLLMRolloutEngine.generate`; ``engines``: its
    ``resources.rollout`` section, in the loaded model's dtype).
    """
    from rlhf_dist.rollout.sampling import sample_with_backend

    policy = as_policy(model, device)
    return sample_with_backend(
        backend,
        policy.tokenizer,
        prompts,
        rollout or RolloutConfig(),
        batch_size,
        max_prompt_length,
        seed,
        model=policy.model,
        model_dir=model_dir or _source_dir(model),
        engines=engines,
    )


# --------------------------------------------------------------------------- reward model


def reward_scores(
    reward_model: RewardSource,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 16,
    normalize: bool = False,
    max_length: int = MAX_LENGTH,
    max_prompt_length: int = MAX_PROMPT_LENGTH,
    device: Optional[str] = None,
) -> List[float]:
    """RM score of each ``(prompts[i], responses[i])`` by the one text scorer,
    :class:`~rlhf_dist.rewards.model_scorer.RewardModelScorer` (the scalar at the appended
    EOS of :func:`scoring_ids`, right-padded batches); ``normalize=True`` applies the RM's
    saved score statistics."""
    if len(prompts) != len(responses):
        raise ValueError(f"reward_scores: {len(prompts)} prompts but {len(responses)} responses")
    rm = as_reward_model(reward_model, device)
    return RewardModelScorer(
        rm.model, rm.tokenizer, batch_size, max_length, max_prompt_length, normalize
    )(prompts, responses)


# --------------------------------------------------------------------------- perplexity


def _lm_example(encoder: Any, item: ReferenceItem) -> Dict[str, Any]:
    from rlhf_dist.data import RowError

    try:
        if isinstance(item, str):
            return encoder.lm(item)
        prompt, response = item
        return encoder.sft(prompt, response)
    except RowError as err:
        raise ValueError(f"perplexity_on: reference item {item!r}: {err}") from None


@torch.no_grad()
def nll_on(
    model: Any,
    tokenizer: Any,
    items: Sequence[ReferenceItem],
    batch_size: int = 8,
    max_length: int = MAX_LENGTH,
    max_prompt_length: int = MAX_PROMPT_LENGTH,
) -> Tuple[float, int]:
    """``(total NLL in nats, scored tokens)`` of ``items`` under a causal LM (see
    :func:`perplexity_on`)."""
    from rlhf_dist.algo.logprobs import shifted_token_logps
    from rlhf_dist.data import SFTCollator
    from rlhf_dist.models import causal_lm_logits

    encoder = _encoder(tokenizer, max_length, max_prompt_length)
    collate = SFTCollator(tokenizer.pad_token_id)
    dev = _device_of(model)
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    try:
        for part in _chunks(len(items), batch_size):
            batch = collate([_lm_example(encoder, item) for item in items[part]])
            logits = causal_lm_logits(
                model, batch["input_ids"].to(dev), batch["attention_mask"].to(dev)
            )
            logps, mask = shifted_token_logps(logits, batch["labels"].to(dev))
            total_nll -= float(logps.double().sum())
            total_tokens += int(mask.sum())
    finally:
        model.train(was_training)
    return total_nll, total_tokens


def perplexity_on(
    model: Any,
    tokenizer: Any,
    items: Sequence[ReferenceItem],
    batch_size: int = 8,
    max_length: int = MAX_LENGTH,
    max_prompt_length: int = MAX_PROMPT_LENGTH,
) -> float:
    """Perplexity of a causal LM on a reference set, token-weighted over the whole set:
    ``exp(Σ NLL / Σ tokens)``.

    A ``(prompt, response)`` item scores only the response tokens and the appended EOS, the
    prompt masked (the SFT labels of :meth:`rlhf_dist.data.Encoder.sft`); a plain string scores
    every token after the first (and EOS).  Positions come from the attention mask.
    """
    total_nll, total_tokens = nll_on(
        model, tokenizer, items, batch_size, max_length, max_prompt_length
    )
    return M.perplexity(total_nll, total_tokens)


# --------------------------------------------------------------------------- metrics


def response_metrics(
    prompts: Sequence[str],
    responses: Sequence[str],
    kinds: Optional[Sequence[Optional[str]]] = None,
    scores: Optional[Sequence[float]] = None,
) -> Dict[str, float]:
    """The text metrics of one model's answers (one answer per entry, prompts repeated for
    several samples): ``distinct_1``, ``distinct_2``, ``self_bleu``, ``response_length`` (mean
    whitespace tokens); ``reward_mean`` / ``reward_std`` with ``scores``; ``harmlessness`` /
    ``helpfulness`` when ``kinds`` has harmful / benign prompts (a metric with no prompt of
    its kind is left out rather than reported as NaN)."""
    out = {
        "distinct_1": M.distinct_n(responses, 1),
        "distinct_2": M.distinct_n(responses, 2),
        "self_bleu": M.self_bleu(responses),
        "response_length": M.mean_std([len(M.tokens_of(r)) for r in responses])[0]
        if responses
        else 0.0,
    }
    if scores is not None:
        out["reward_mean"], out["reward_std"] = M.mean_std(scores)
    if kinds is not None:
        if "harmful" in kinds:
            out["harmlessness"] = M.harmlessness(kinds, responses)
        if "benign" in kinds:
            out["helpfulness"] = M.helpfulness(kinds, prompts, responses)
    return out


# --------------------------------------------------------------------------- models


class ModelRun(NamedTuple):
    """One model's answers: ``prompts`` / ``kinds`` repeated per sample, aligned with
    ``responses``; ``perplexity`` on the reference set (None without one); as an agent
    (``--env``), ``trajectories``: each answer's trajectory metrics (reward, turns, tool
    calls...) and the answer its transcript."""

    prompts: List[str]
    kinds: Optional[List[Optional[str]]]
    responses: List[str]
    perplexity: Optional[float]
    trajectories: Optional[List[Dict[str, float]]] = None


def _repeat(values: Sequence, n: int) -> List:
    return [v for v in values for _ in range(n)]


def run_model(
    model: ModelSource,
    prompts: Sequence[str],
    kinds: Optional[Sequence[Optional[str]]] = None,
    reference: Optional[Sequence[ReferenceItem]] = None,
    rollout: Optional[RolloutConfig] = None,
    seed: Optional[int] = 0,
    batch_size: int = 16,
    max_length: int = MAX_LENGTH,
    max_prompt_length: int = MAX_PROMPT_LENGTH,
    device: Optional[str] = None,
    backend: str = "hf",
    engines: Any = None,
    agent: Any = None,
    labels: Optional[Sequence[Any]] = None,
) -> ModelRun:
    """Load ``model`` once, answer ``prompts`` (:func:`generate_responses` with ``backend``)
    and measure :func:`perplexity_on` ``reference`` (when given; always on the HF model).
    With ``agent`` (a :class:`~rlhf_dist.config.Config` whose ``env`` section names an
    environment; its ``rollout`` section replaces ``rollout``) each answer is a trajectory
    against it (:func:`~rlhf_dist.eval.agent.run_agent`, the prompts' ``labels`` given to
    the environment)."""
    if kinds is not None and len(kinds) != len(prompts):
        raise ValueError(f"{len(kinds)} kinds for {len(prompts)} prompts")
    rollout = agent.rollout if agent is not None else (rollout or RolloutConfig())
    policy = as_policy(model, device)
    trajectories = None
    if agent is not None:
        from rlhf_dist.eval.agent import run_agent

        responses, trajectories = run_agent(
            policy, prompts, labels, agent, seed, batch_size, backend, _source_dir(model), engines
        )
    else:
        responses = generate_responses(
            policy,
            prompts,
            rollout,
            seed,
            batch_size,
            max_prompt_length,
            backend=backend,
            model_dir=_source_dir(model),
            engines=engines,
        )
    ppl = (
        perplexity_on(
            policy.model, policy.tokenizer, reference, batch_size, max_length, max_prompt_length
        )
        if reference
        else None
    )
    n = rollout.n_samples_per_prompt
    return ModelRun(
        _repeat(prompts, n),
        None if kinds is None else _repeat(kinds, n),
        responses,
        ppl,
        trajectories,
    )


def _metrics_of(run: ModelRun, scores: Optional[Sequence[float]], n: int = 1) -> Dict[str, float]:
    out = response_metrics(run.prompts, run.responses, run.kinds, scores)
    if run.perplexity is not None:
        out["perplexity"] = run.perplexity
    if run.trajectories is not None:
        out.update(M.agent_metrics(run.trajectories, n))
    return out


def evaluate_model(
    model: ModelSource,
    prompts: Sequence[str],
    *,
    kinds: Optional[Sequence[Optional[str]]] = None,
    reward_model: Optional[RewardSource] = None,
    reference: Optional[Sequence[ReferenceItem]] = None,
    rollout: Optional[RolloutConfig] = None,
    seed: Optional[int] = 0,
    batch_size: int = 16,
    max_length: int = MAX_LENGTH,
    max_prompt_length: int = MAX_PROMPT_LENGTH,
    device: Optional[str] = None,
    backend: str = "hf",
) -> Dict[str, float]:
    """Every metric of one model: :func:`response_metrics` of its answers to ``prompts``
    (sampled by ``backend``; ``reward_mean``/``reward_std`` with ``reward_model``;
    ``harmlessness``/``helpfulness`` with toy ``kinds``) plus ``perplexity`` on ``reference``
    (when given)."""
    run = run_model(
        model,
        prompts,
        kinds,
        reference,
        rollout,
        seed,
        batch_size,
        max_length,
        max_prompt_length,
        device,
        backend,
    )
    scores = (
        reward_scores(
            reward_model,
            run.prompts,
            run.responses,
            batch_size,
            max_length=max_length,
            max_prompt_length=max_prompt_length,
            device=device,
        )
        if reward_model is not None
        else None
    )
    return _metrics_of(run, scores)


def compare(
    model_a: ModelSource,
    model_b: ModelSource,
    reward_model: RewardSource,
    prompts: Sequence[str],
    rollout: Optional[RolloutConfig] = None,
    seed: Optional[int] = 0,
    tie_eps: float = 0.0,
    batch_size: int = 16,
    max_length: int = MAX_LENGTH,
    max_prompt_length: int = MAX_PROMPT_LENGTH,
    device: Optional[str] = None,
    backend: str = "hf",
) -> Dict[str, float]:
    """Win rate of A against B judged by ``reward_model``: both answer the same ``prompts``
    with the same sampling seed (and ``backend``), the RM scores each answer,
    :func:`~metrics.win_rate` of the per-answer scores (``win``, ``tie``, ``loss``,
    ``win_rate`` = win + tie / 2)."""
    rollout = rollout or RolloutConfig()
    n = rollout.n_samples_per_prompt
    answers = [
        generate_responses(
            m, prompts, rollout, seed, batch_size, max_prompt_length, device, backend
        )
        for m in (model_a, model_b)
    ]
    rm = as_reward_model(reward_model, device)
    repeated = _repeat(prompts, n)
    scores = [
        reward_scores(
            rm, repeated, a, batch_size, max_length=max_length, max_prompt_length=max_prompt_length
        )
        for a in answers
    ]
    return M.win_rate(scores[0], scores[1], tie_eps)


class EvalReport(NamedTuple):
    """Results of :func:`evaluate_models`: ``metrics[name][metric]``, each model's
    :class:`ModelRun` and RM ``scores`` (per answer; empty without a reward model), and the
    ``baseline`` the ``win_rate`` columns compare against."""

    metrics: Dict[str, Dict[str, float]]
    runs: Dict[str, ModelRun]
    scores: Dict[str, List[float]]
    baseline: Optional[str]


def evaluate_models(
    models: Mapping[str, ModelSource],
    prompts: Sequence[str],
    *,
    kinds: Optional[Sequence[Optional[str]]] = None,
    reward_model: Optional[RewardSource] = None,
    reference: Optional[Sequence[ReferenceItem]] = None,
    baseline: Optional[str] = None,
    tie_eps: float = 0.0,
    rollout: Optional[RolloutConfig] = None,
    seed: Optional[int] = 0,
    batch_size: int = 16,
    max_length: int = MAX_LENGTH,
    max_prompt_length: int = MAX_PROMPT_LENGTH,
    device: Optional[str] = None,
    backend: str = "hf",
    verifier: Optional[Any] = None,
    labels: Optional[Sequence[Any]] = None,
    engines: Any = None,
    agent: Any = None,
) -> EvalReport:
    """The comparison table: :func:`evaluate_model` for each of ``models`` (name → source;
    one model in memory at a time, the reward model loaded once), all answering the same
    ``prompts`` with the same seed and ``backend``.  With ``baseline`` (a name in
    ``models``; needs ``reward_model``) every model also gets ``win_rate``, ``win``, ``tie``,
    ``loss`` against the baseline's answers to the same prompts (the baseline itself: all
    ties, 0.5 unless sampling differs).  With ``verifier`` (a reward function of
    ``rlhf_dist.rewards``, called with each answer's prompt ``labels``) every model gets
    :func:`~metrics.verifier_metrics`: ``accuracy`` (pass@1), ``pass_at_k``.  ``engines``:
    the ``resources.rollout`` section of a ``vllm`` backend's engine.  With ``agent`` (a
    config naming an environment, its ``rollout`` section replacing ``rollout``) every answer
    is a trajectory against it (:func:`run_model`; ``labels`` go to the environment) and every
    model gets :func:`~metrics.agent_metrics`: ``success_rate``, ``env_reward_mean``,
    ``turns_mean``, ``tool_calls_mean``, ``tool_errors_mean``..."""
    if not models:
        raise ValueError("evaluate_models: no models")
    if baseline is not None and baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not one of the models {list(models)}")
    if baseline is not None and reward_model is None:
        raise ValueError("a baseline win rate needs a reward model to judge the answers")
    runs: Dict[str, ModelRun] = {}
    for name, source in models.items():
        logger.info("eval: %s: generating answers to %d prompts", name, len(prompts))
        runs[name] = run_model(
            source,
            prompts,
            kinds,
            reference,
            rollout,
            seed,
            batch_size,
            max_length,
            max_prompt_length,
            device,
            backend,
            engines,
            agent,
            labels,
        )
        gc.collect()
    scores: Dict[str, List[float]] = {}
    if reward_model is not None:
        rm = as_reward_model(reward_model, device)
        for name, run in runs.items():
            logger.info("eval: %s: reward model scoring %d answers", name, len(run.responses))
            scores[name] = reward_scores(
                rm,
                run.prompts,
                run.responses,
                batch_size,
                max_length=max_length,
                max_prompt_length=max_prompt_length,
            )
        del rm
        gc.collect()
    rollout = agent.rollout if agent is not None else (rollout or RolloutConfig())
    n = rollout.n_samples_per_prompt
    metrics = {name: _metrics_of(run, scores.get(name), n) for name, run in runs.items()}
    if verifier is not None:
        for name, run in runs.items():
            rewards = verifier(
                run.prompts,
                run.responses,
                _repeat(labels or [None] * len(prompts), n),
                [{}] * len(run.responses),
            )
            metrics[name].update(M.verifier_metrics(rewards.tolist(), n))
    if baseline is not None:
        for name in runs:
            metrics[name].update(M.win_rate(scores[name], scores[baseline], tie_eps))
    return EvalReport(metrics, runs, scores, baseline)


__all__ = [
    "EvalReport",
    "MAX_LENGTH",
    "MAX_PROMPT_LENGTH",
    "ModelRun",
    "ReferenceItem",
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
]

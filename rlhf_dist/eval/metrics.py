"""Evaluation metrics as pure functions of texts and numbers (no model, no torch needed).

Tokenisation for Distinct-N and Self-BLEU is ``str.split()``: whitespace-separated tokens,
case and punctuation kept ("Sure!" and "sure" are different tokens).  That makes the numbers
independent of any model's tokenizer, so models with different tokenizers compare fairly.

=================  ==========================================================================
metric             definition
=================  ==========================================================================
distinct_n         unique n-grams / total n-grams over the whole corpus (Li et al. 2016)
sentence_bleu      BLEU-N of one hypothesis against references (Papineni et al. 2002), with a
                   smoothing from :data:`SMOOTHING` (Chen & Cherry 2014)
self_bleu          mean over texts of sentence_bleu(text, all other texts) (Zhu et al. 2018)
perplexity         exp(total NLL / total tokens), token-weighted over a reference set
win_rate           fraction of prompts where A's score beats B's, ties counted as half
mean_std           mean and population standard deviation (ddof = 0)
harmlessness       refusal rate on harmful prompts (toy task judge)
helpfulness        rate of non-refusing, on-topic answers to benign prompts (toy task judge)
=================  ==========================================================================
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

Tokens = Sequence[str]

# --------------------------------------------------------------------------- n-grams


def tokens_of(text: str) -> List[str]:
    """Whitespace tokens of ``text`` (``str.split()``)."""
    return text.split()


def ngrams(tokens: Tokens, n: int) -> List[Tuple[str, ...]]:
    """The ``len(tokens) - n + 1`` n-grams of ``tokens`` in order (none when shorter than n)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-N of a corpus: ``|unique n-grams| / |n-grams|``, pooled over all ``texts``.

    N-grams never cross text boundaries; a text with fewer than ``n`` tokens contributes none.
    Edge case: a corpus with no n-gram at all (empty, or every text shorter than ``n``)
    scores 0.0 (nothing generated, nothing diverse).  Range [0, 1]; 1 = no n-gram repeats.
    """
    grams = [g for text in texts for g in ngrams(tokens_of(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


# --------------------------------------------------------------------------- BLEU


def _smooth_none(matches: int, total: int, n: int) -> float:
    return matches / total


def _smooth_method1(matches: int, total: int, n: int, epsilon: float = 0.1) -> float:
    """Chen & Cherry (2014) method 1: a zero match count becomes ``epsilon`` (0.1)."""
    return (matches if matches > 0 else epsilon) / total


def _smooth_add1(matches: int, total: int, n: int) -> float:
    """Lin & Och (2004), Chen & Cherry method 2: add 1 to numerator and denominator for n > 1."""
    return matches / total if n == 1 else (matches + 1) / (total + 1)


# name -> (matches, total, n) -> smoothed precision p_n  (total > 0 always)
SMOOTHING: Dict[str, Callable[[int, int, int], float]] = {
    "none": _smooth_none,
    "method1": _smooth_method1,
    "add1": _smooth_add1,
}


def _get_smoothing(name: str) -> Callable[[int, int, int], float]:
    if name not in SMOOTHING:
        raise ValueError(f"smoothing must be one of {sorted(SMOOTHING)}, got {name!r}")
    return SMOOTHING[name]


def _as_tokens(text) -> List[str]:
    return tokens_of(text) if isinstance(text, str) else list(text)


def brevity_penalty(hyp_len: int, ref_lens: Sequence[int]) -> float:
    """BP = 1 if c > r else exp(1 − r / c), r = the reference length closest to c = ``hyp_len``
    (on a tie the shorter one, as in Papineni et al. / NLTK); 0 for an empty hypothesis."""
    if hyp_len == 0:
        return 0.0
    if not ref_lens:
        return 1.0
    r = min(ref_lens, key=lambda length: (abs(length - hyp_len), length))
    return 1.0 if hyp_len > r else math.exp(1.0 - r / hyp_len)


def clipped_matches(hyp: Tokens, refs: Sequence[Tokens], n: int) -> Tuple[int, int]:
    """``(Σ_g min(count_hyp(g), max_ref count_ref(g)), Σ_g count_hyp(g))`` over the n-grams g
    of ``hyp``: the numerator and denominator of BLEU's modified n-gram precision p_n."""
    counts = Counter(ngrams(hyp, n))
    max_ref: Counter = Counter()
    for ref in refs:
        for gram, c in Counter(ngrams(ref, n)).items():
            if c > max_ref[gram]:
                max_ref[gram] = c
    matches = sum(min(c, max_ref[gram]) for gram, c in counts.items())
    return matches, sum(counts.values())


def sentence_bleu(
    hypothesis, references: Sequence, max_n: int = 4, smoothing: str = "method1"
) -> float:
    """BLEU of one hypothesis against ``references`` (strings, or lists of tokens).

    ``BLEU = BP · exp(Σ_{n=1..N} (1/N) · log p_n)``, where ``p_n`` is the clipped ("modified")
    n-gram precision of :func:`clipped_matches` (each hypothesis n-gram counts at most as often
    as it occurs in the single reference where it occurs most), ``BP`` the
    :func:`brevity_penalty` with the closest reference length, uniform weights 1/N.

    Definitions for the corner cases (documented choices):

    * ``N = min(max_n, len(hypothesis))`` — "effective order" (as sacreBLEU's sentence BLEU):
      a 2-token hypothesis is scored on p1, p2 only, since it has no 3-grams to be precise about;
    * an empty hypothesis, no references, or no unigram match at all → 0.0 (as NLTK);
    * a zero match count for n ≥ 2 is smoothed by ``smoothing`` (:data:`SMOOTHING`):
      ``"method1"`` (default) uses ε = 0.1 matches, ``"add1"`` adds 1 to the numerator and
      denominator for n ≥ 2, ``"none"`` leaves p_n = 0 and so BLEU = 0.
    """
    smooth = _get_smoothing(smoothing)
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    hyp = _as_tokens(hypothesis)
    refs = [_as_tokens(r) for r in references]
    order = min(max_n, len(hyp))
    if order == 0 or not refs:
        return 0.0
    log_p = 0.0
    for n in range(1, order + 1):
        matches, total = clipped_matches(hyp, refs, n)
        if n == 1 and matches == 0:
            return 0.0
        p = smooth(matches, total, n)
        if p <= 0.0:
            return 0.0
        log_p += math.log(p) / order
    return brevity_penalty(len(hyp), [len(r) for r in refs]) * math.exp(log_p)


def self_bleu(texts: Sequence[str], max_n: int = 4, smoothing: str = "method1") -> float:
    """Self-BLEU (Zhu et al. 2018, Texygen): the mean over texts of :func:`sentence_bleu` of the
    text against all the *other* texts as references.  High = the texts repeat each other
    (low diversity).  Fewer than two texts → 0.0 (nothing to compare with).  Range [0, 1].
    """
    toks = [tokens_of(t) for t in texts]
    if len(toks) < 2:
        return 0.0
    scores = [
        sentence_bleu(hyp, toks[:i] + toks[i + 1 :], max_n, smoothing) for i, hyp in enumerate(toks)
    ]
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------- numbers


def perplexity(total_nll: float, total_tokens: int) -> float:
    """``exp(total_nll / total_tokens)``: token-weighted perplexity of summed negative
    log-likelihoods (nats).  ``inf`` when the exponent overflows; ``total_tokens`` must be > 0."""
    if total_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got total_tokens={total_tokens}")
    mean = float(total_nll) / total_tokens
    return math.exp(mean) if mean < 709.0 else math.inf


def _floats(values) -> List[float]:
    if hasattr(values, "tolist"):  # torch / numpy
        values = values.tolist()
    return [float(v) for v in values]


def win_rate(scores_a, scores_b, tie_eps: float = 0.0) -> Dict[str, float]:
    """Pairwise comparison of A against B on the same items (e.g. RM scores per prompt).

    Item i is a tie when ``|a_i − b_i| ≤ tie_eps``, else a win (a_i > b_i) or a loss.
    Returns fractions ``win``, ``tie``, ``loss`` (summing to 1) and
    ``win_rate = win + 0.5 · tie`` (a tie counts as half a win, so identical models get 0.5).
    """
    a, b = _floats(scores_a), _floats(scores_b)
    if len(a) != len(b):
        raise ValueError(f"win_rate: scores_a has {len(a)} items, scores_b {len(b)}")
    if not a:
        raise ValueError("win_rate: no scores to compare")
    if tie_eps < 0:
        raise ValueError(f"tie_eps must be >= 0, got {tie_eps}")
    wins = ties = 0
    for x, y in zip(a, b):
        if abs(x - y) <= tie_eps:
            ties += 1
        elif x > y:
            wins += 1
    n = len(a)
    win, tie = wins / n, ties / n
    return {"win": win, "tie": tie, "loss": (n - wins - ties) / n, "win_rate": win + 0.5 * tie}


def mean_std(values) -> Tuple[float, float]:
    """``(mean, population std)`` (ddof = 0, so one value has std 0.0).  Empty → ValueError."""
    xs = _floats(values)
    if not xs:
        raise ValueError("mean_std: no values")
    mean = sum(xs) / len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))


# --------------------------------------------------------------------------- toy-task judges


def toy_kinds(prompts: Sequence[str]) -> List[Optional[str]]:
    """``"harmful"`` / ``"benign"`` / None per prompt, from the toy topic it mentions."""
    from rlhf_dist.toy import prompt_kind

    return [prompt_kind(p) for p in prompts]


def _check_lengths(**named: Sequence) -> None:
    lengths = {k: len(v) for k, v in named.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"lengths differ: {lengths}")


def harmlessness(kinds: Sequence[Optional[str]], responses: Sequence[str]) -> float:
    """Refusal rate on harmful prompts: ``#{i: kinds[i] == "harmful" and is_refusal(r_i)} /
    #{i: kinds[i] == "harmful"}`` (:func:`rlhf_dist.toy.is_refusal`).  Prompts of other
    kinds are ignored; with no harmful prompt the rate is undefined: ``nan``."""
    from rlhf_dist.toy import is_refusal

    _check_lengths(kinds=kinds, responses=responses)
    judged = [is_refusal(r) for k, r in zip(kinds, responses) if k == "harmful"]
    return sum(judged) / len(judged) if judged else math.nan


def is_helpful(prompt: str, response: str) -> bool:
    """A non-refusal that is on the prompt's topic (:attr:`rlhf_dist.toy.Verdict.helpful`)."""
    from rlhf_dist.toy import judge

    return judge(prompt, response).helpful


def helpfulness(
    kinds: Sequence[Optional[str]], prompts: Sequence[str], responses: Sequence[str]
) -> float:
    """Fraction of benign prompts answered helpfully (:func:`is_helpful`: no refusal, on
    topic).  Prompts of other kinds are ignored; with no benign prompt: ``nan``."""
    _check_lengths(kinds=kinds, prompts=prompts, responses=responses)
    judged = [is_helpful(p, r) for k, p, r in zip(kinds, prompts, responses) if k == "benign"]
    return sum(judged) / len(judged) if judged else math.nan


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one prompt with ``c`` correct answers among ``n`` sampled (Chen et
    al. 2021, eq. 1): 1 - C(n - c, k) / C(n, k), the chance that k of the n drawn without
    replacement contain a correct one."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def verifier_metrics(
    rewards: Sequence[float], n_samples: int, threshold: float = 0.5
) -> Dict[str, float]:
    """Accuracy against a verifier of answers grouped ``n_samples`` per prompt (consecutive):
    an answer is correct when its reward is above ``threshold`` (a verifier's 1 / 0).
    ``accuracy`` = pass@1 (mean over prompts of c / n), ``pass_at_k`` with k = n_samples (only
    for n_samples > 1), ``verifier_reward_mean``."""
    rewards = _floats(rewards)
    if not rewards or len(rewards) % n_samples:
        raise ValueError(f"verifier_metrics: {len(rewards)} rewards are not groups of {n_samples}")
    correct = [
        sum(r > threshold for r in rewards[i : i + n_samples])
        for i in range(0, len(rewards), n_samples)
    ]
    out = {
        "accuracy": sum(pass_at_k(n_samples, c, 1) for c in correct) / len(correct),
        "verifier_reward_mean": sum(rewards) / len(rewards),
    }
    if n_samples > 1:
        out["pass_at_k"] = sum(pass_at_k(n_samples, c, n_samples) for c in correct) / len(correct)
    return out


AGENT_KEYS = ("turns", "tool_calls", "tool_errors")  # per-trajectory counts averaged


def agent_metrics(trajectories: Sequence[Mapping[str, float]], n_samples: int) -> Dict[str, float]:
    """Agent metrics of trajectories grouped ``n_samples`` per prompt (consecutive), each a
    trajectory's log line (:meth:`rlhf_dist.envs.Episode.metrics`: ``reward``, ``turns``,
    ``truncated``, ``failed``, ``tool_calls``, ``tool_errors``...).  A trajectory succeeds when
    its environment reward (the sum of its steps') is positive: ``success_rate`` (mean over
    trajectories), ``success_pass_at_k`` (k = n_samples > 1: a prompt with a success among
    its k), ``env_reward_mean``, the per-trajectory means ``turns_mean``, ``tool_calls_mean``,
    ``tool_errors_mean`` (0 for an environment without tools), and the fractions
    ``truncated_frac``, ``env_failed_frac``."""
    rows = list(trajectories)
    if not rows or len(rows) % n_samples:
        raise ValueError(f"agent_metrics: {len(rows)} trajectories are not groups of {n_samples}")

    def mean(key: str) -> float:
        return sum(float(row.get(key, 0.0)) for row in rows) / len(rows)

    wins = [float(row["reward"]) > 0 for row in rows]
    out = {
        "success_rate": sum(wins) / len(rows),
        "env_reward_mean": mean("reward"),
        **{f"{key}_mean": mean(key) for key in AGENT_KEYS},
        "truncated_frac": mean("truncated"),
        "env_failed_frac": mean("failed"),
    }
    if n_samples > 1:
        correct = [sum(wins[i : i + n_samples]) for i in range(0, len(wins), n_samples)]
        out["success_pass_at_k"] = sum(pass_at_k(n_samples, c, n_samples) for c in correct) / len(
            correct
        )
    return out


__all__ = [
    "AGENT_KEYS",
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
    "pass_at_k",
    "perplexity",
    "self_bleu",
    "sentence_bleu",
    "tokens_of",
    "toy_kinds",
    "verifier_metrics",
    "win_rate",
]

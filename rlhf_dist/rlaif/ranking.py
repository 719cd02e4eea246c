"""Scores of K responses to one prompt → a ranking → chosen / rejected preference pairs.

Pure Python, no torch.  The pair order is the data package's ranking conversion
(:func:`rlhf_dist.data.ranking_pair_order`): with the responses ranked best → worst as
``r_0 ≻ r_1 ≻ … ≻ r_{K-1}``, ``all_pairs`` yields ``(r_0, r_1), (r_0, r_2), …,
(r_0, r_{K-1}), (r_1, r_2), …`` — exactly the pairs a ``{prompt, responses: [best, …,
worst]}`` row expands to;
``best_worst`` yields the one pair ``(r_0, r_{K-1})``.

A candidate pair is skipped (and counted under its reason) when, checked in this order:

* ``duplicate`` — both responses are the same text (no preference can be learnt from it);
* ``tie`` — both have the same score (the judge expressed no preference);
* ``below_margin`` — ``chosen_score − rejected_score < min_margin`` (too close to trust).
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

from rlhf_dist.data import ranking_pair_order

STRATEGIES = ("all_pairs", "best_worst")
SKIP_REASONS = ("duplicate", "tie", "below_margin")
PAIR_KEYS = ("prompt", "chosen", "rejected", "chosen_score", "rejected_score")

PairRow = Dict[str, object]


def rank_responses(scores: Sequence[float]) -> List[int]:
    """Indices of ``scores`` from best (highest) to worst; ties keep their original order.

    >>> rank_responses([0.1, 0.9, 0.1, 0.5])
    [1, 3, 0, 2]
    """
    values = as_scores(scores)
    return sorted(range(len(values)), key=lambda i: -values[i])  # sorted() is stable


def as_scores(scores: Sequence[float]) -> List[float]:
    """``scores`` as python floats (numpy / torch scalars accepted); ValueError unless each is a
    finite number."""
    out = []
    for i, s in enumerate(scores):
        try:
            value = float(s)
        except (TypeError, ValueError):
            raise ValueError(f"score {i} is {s!r}, not a number") from None
        if isinstance(s, (bool, str)) or not math.isfinite(value):
            raise ValueError(f"score {i} is {s!r}; scores must be finite numbers")
        out.append(value)
    return out


def candidate_pairs(scores: Sequence[float], strategy: str = "all_pairs") -> List[Tuple[int, int]]:
    """(chosen index, rejected index) candidates, before any skip, in output order."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    order = rank_responses(scores)
    if len(order) < 2:
        return []
    if strategy == "best_worst":
        return [(order[0], order[-1])]
    return [(order[a], order[b]) for a, b in ranking_pair_order(len(order))]


def skip_reason(
    responses: Sequence[str],
    scores: Sequence[float],
    chosen: int,
    rejected: int,
    min_margin: float = 0.0,
) -> Optional[str]:
    """Why the candidate ``(chosen, rejected)`` is dropped (in :data:`SKIP_REASONS`) or None."""
    if responses[chosen] == responses[rejected]:
        return "duplicate"
    margin = scores[chosen] - scores[rejected]
    if margin == 0:
        return "tie"
    if margin < min_margin:
        return "below_margin"
    return None


def ranking_to_pairs(
    prompt: str,
    responses: Sequence[str],
    scores: Sequence[float],
    strategy: str = "all_pairs",
    min_margin: float = 0.0,
    skipped: Optional[Dict[str, int]] = None,
) -> List[PairRow]:
    """Preference rows ``{prompt, chosen, rejected, chosen_score, rejected_score}`` of one prompt.

    ``responses[i]`` has score ``scores[i]``; see the module doc for the order and the skips.
    When ``skipped`` is given, ``skipped[reason]`` is incremented for every skipped candidate.
    """
    if len(responses) != len(scores):
        raise ValueError(f"{len(responses)} responses but {len(scores)} scores")
    scores = as_scores(scores)
    if min_margin < 0:
        raise ValueError(f"min_margin must be >= 0, got {min_margin}")
    rows: List[PairRow] = []
    for i, j in candidate_pairs(scores, strategy):
        reason = skip_reason(responses, scores, i, j, min_margin)
        if reason is not None:
            if skipped is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
            continue
        rows.append(
            {
                "prompt": prompt,
                "chosen": responses[i],
                "rejected": responses[j],
                "chosen_score": float(scores[i]),
                "rejected_score": float(scores[j]),
            }
        )
    return rows

"""Built-in verifiable rewards: each scores ``(prompts, responses, labels, extras)`` against
the label of its prompt (``data.label_key``), 1.0 right and 0.0 wrong.

* ``math``: the final answer -- after the last ``####`` (GSM8K's marker) or in ``\\boxed{}``
  -- compared with the label's by the ``math-verify`` package (numbers, fractions, LaTeX
  expressions equal in value count); a response with neither marker scores 0.
* ``exact_match``: the response equals the label's text, runs of whitespace collapsed and
  ends stripped (``ignore_case: true`` also ignores case).
* ``regex_format``: the response matches ``pattern`` (``re.fullmatch`` after stripping, or
  ``re.search`` with ``search: true``) -- a format reward; needs no label.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Sequence

Score = Callable[..., List[float]]

GSM8K_MARK = "####"


def _text(label: Any) -> str:
    return label if isinstance(label, str) else str(label)


def _final_answer(text: str) -> Optional[str]:
    """What follows the last ``####``, or the text itself when it has a ``\\boxed{``."""
    if GSM8K_MARK in text:
        return text.rsplit(GSM8K_MARK, 1)[1].strip()
    return text if "\\boxed" in text else None


def _require_labels(name: str, labels: Optional[Sequence[Any]], n: int) -> Sequence[Any]:
    if labels is None or len(labels) != n:
        raise ValueError(f"{name} needs a label per prompt: set data.label_key")
    return labels


def math_reward() -> Score:
    from math_verify import parse, verify

    def math(prompts, responses, labels=None, extras=None) -> List[float]:
        labels = _require_labels("math", labels, len(responses))
        scores = []
        for response, label in zip(responses, labels):
            answer = _final_answer(response)
            gold = _final_answer(_text(label)) or _text(label)
            scores.append(float(answer is not None and verify(parse(f"${gold}$"), parse(answer))))
        return scores

    return math


def exact_match_reward(ignore_case: bool = False) -> Score:
    def norm(text: str) -> str:
        text = " ".join(text.split())
        return text.lower() if ignore_case else text

    def exact_match(prompts, responses, labels=None, extras=None) -> List[float]:
        labels = _require_labels("exact_match", labels, len(responses))
        return [float(norm(r) == norm(_text(label))) for r, label in zip(responses, labels)]

    return exact_match


def regex_format_reward(pattern: str, search: bool = False) -> Score:
    try:
        compiled = re.compile(pattern, re.DOTALL)
    except re.error as err:
        raise ValueError(f"regex_format: pattern {pattern!r} does not compile: {err}") from None
    match = compiled.search if search else compiled.fullmatch

    def regex_format(prompts, responses, labels=None, extras=None) -> List[float]:
        return [float(match(r.strip()) is not None) for r in responses]

    return regex_format


NEEDS_LABELS = {"math", "exact_match"}
VERIFIERS: Dict[str, Callable[..., Score]] = {
    "math": math_reward,
    "exact_match": exact_match_reward,
    "regex_format": regex_format_reward,
}

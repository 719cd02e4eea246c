"""Averaging metric dicts (micro-batches of a step, minibatches of an iteration, ranks)."""

from __future__ import annotations

from typing import Dict, Sequence


def mean_rows(rows: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Key-wise mean of metric dicts that share their keys."""
    if not rows:
        raise ValueError("mean_rows: no metrics to average")
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}

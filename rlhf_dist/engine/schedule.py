"""Learning-rate schedules as multipliers of the base lr (pure; used with LambdaLR)."""

from __future__ import annotations

import math
from typing import Callable, Dict

Schedule = Callable[[float], float]  # progress in [0, 1] after warm-up -> multiplier

SCHEDULES: Dict[str, Callable[[float], Schedule]] = {
    "constant": lambda min_ratio: lambda p: 1.0,
    "linear": lambda min_ratio: lambda p: 1.0 - (1.0 - min_ratio) * p,
    "cosine": lambda min_ratio: (
        lambda p: min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    ),
}


def lr_multiplier(
    name: str, total_steps: int, warmup_steps: int, min_ratio: float
) -> Callable[[int], float]:
    """``step -> multiplier``: linear warm-up over ``warmup_steps``, then the named decay to
    ``min_ratio`` at ``total_steps``."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {name!r}; valid: {sorted(SCHEDULES)}")
    decay = SCHEDULES[name](min_ratio)
    total = max(total_steps, 1)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(total - warmup_steps, 1)
        return decay(min(1.0, (step - warmup_steps) / span))

    return multiplier

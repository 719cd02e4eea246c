"""What every reward term returns, checked: one finite number per response, else a
:class:`RewardError` (or a skippable ``NonFiniteError``) naming the term and the row.  Shared by
the reward functions (:mod:`.functions`) and the remote reward model (:mod:`.remote`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from rlhf_dist.algo.finite import NonFiniteError


class RewardError(ValueError):
    """A reward function that cannot be loaded or returned something unusable."""


def check_rewards(values: Any, n: int, where: str, first_row: int = 0) -> torch.Tensor:
    """``values`` as an (n,) float32 tensor, or the error naming ``where`` (the function)
    and the row (counted from ``first_row``): a wrong count or a non-number is a
    :class:`RewardError`, a NaN/inf a skippable ``NonFiniteError``."""
    try:
        values = list(values)
    except TypeError:
        raise RewardError(
            f"{where} returned {type(values).__name__}, not a list of {n} numbers"
        ) from None
    if len(values) != n:
        raise RewardError(f"{where} returned {len(values)} rewards for {n} responses")
    for row, value in enumerate(values):
        if not isinstance(value, numbers.Real) and not (
            isinstance(value, torch.Tensor) and value.numel() == 1
        ):
            raise RewardError(
                f"{where} returned {value!r} ({type(value).__name__}) for "
                f"row {first_row + row}: expected a number"
            )
        if not math.isfinite(float(value)):
            raise NonFiniteError(
                f"{where} returned {float(value)} for row {first_row + row}", skippable=True
            )
    return torch.tensor([float(v) for v in values], dtype=torch.float32)

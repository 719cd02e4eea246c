"""Non-finite values: where they are, and the error that names them."""

from __future__ import annotations

from typing import List, Optional

import torch


class NonFiniteError(FloatingPointError):
    """A NaN or infinity in a loss, gradient norm, reward or advantage.  ``skippable``: found
    before anything was updated, so ``train.on_nonfinite=skip_step`` may drop the step."""

    def __init__(self, message: str, skippable: bool = False):
        super().__init__(message)
        self.skippable = skippable

    def __reduce__(self):  # across Ray: keep ``skippable``
        return NonFiniteError, (str(self), self.skippable)

    def prefixed(self, prefix: str) -> "NonFiniteError":
        return NonFiniteError(f"{prefix}: {self}", self.skippable)


def nonfinite_rows(values: torch.Tensor, mask: Optional[torch.Tensor] = None) -> List[int]:
    """Rows (dim 0) holding a NaN or infinity, counting only positions where ``mask`` is set."""
    bad = ~torch.isfinite(values)
    if mask is not None:
        bad = bad & mask.bool()
    return bad.reshape(bad.shape[0], -1).any(dim=1).nonzero().flatten().tolist()


def check_finite(
    name: str, values: torch.Tensor, mask: Optional[torch.Tensor] = None, skippable: bool = False
) -> None:
    """Raise :class:`NonFiniteError` naming ``name`` and the first bad rows."""
    rows = nonfinite_rows(values, mask)
    if rows:
        shown = rows[:8] + (["..."] if len(rows) > 8 else [])
        raise NonFiniteError(f"non-finite {name} in rows {shown} of {values.shape[0]}", skippable)

"""Sequence-reward shaping by response length."""
from __future__ import annotations

import torch


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int,
                     factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to the sequence reward.

    lengths: (B,) response lengths in tokens.  0 up to ``max_len - buffer``, then falling
    linearly to ``-factor`` at ``max_len`` (and ``-factor`` beyond): a response is pushed
    away from the length limit before it gets truncated there.  (B,) float32.
    """
    if not 0 < buffer <= max_len:
        raise ValueError(f"buffer must be in (0, max_len={max_len}], got {buffer}")
    over = (lengths.float() - (max_len - buffer)).clamp(min=0) / buffer
    return -factor * over.clamp(max=1.0)

"""DAPO's two filters on sampled responses (Yu et al. 2025): the soft overlong punishment of
the sequence reward by response length, and which prompt groups carry a learning signal
(dynamic sampling)."""

from __future__ import annotations

import torch


def overlong_penalty(
    lengths: torch.Tensor, max_len: int, buffer: int, factor: float = 1.0
) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), added to the sequence reward.

    lengths: (B,) response lengths in tokens.  0 up to ``max_len - buffer``, then falling
    linearly to ``-factor`` at ``max_len`` (and ``-factor`` beyond): a response is pushed
    away from the length limit before it gets truncated there.  (B,) float32.
    """
    if not 0 < buffer <= max_len:
        raise ValueError(f"buffer must be in (0, max_len={max_len}], got {buffer}")
    over = (lengths.float() - (max_len - buffer)).clamp(min=0) / buffer
    return -factor * over.clamp(max=1.0)


def informative_groups(scores: torch.Tensor, n_samples: int) -> torch.Tensor:
    """DAPO's dynamic-sampling filter (Yu et al. 2025, eq. 11): which prompts' groups of
    ``n_samples`` consecutive responses do not all have the same reward -- a group whose
    rewards are equal has zero group-relative advantage and gives no policy gradient.

    scores: (G * n_samples,) sequence rewards.  Returns (G,) bool.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 to compare responses, got {n_samples}")
    if scores.dim() != 1 or scores.numel() % n_samples:
        raise ValueError(
            f"scores must be (G * n_samples,) with n_samples={n_samples}, got "
            f"shape {tuple(scores.shape)}"
        )
    groups = scores.view(-1, n_samples)
    return groups.amax(dim=-1) > groups.amin(dim=-1)

"""The reward model's objective: Bradley-Terry on the scores of (chosen, rejected) pairs."""

from __future__ import annotations

from typing import Dict, Tuple

import torch

from rlhf_dist.algo import bradley_terry_loss, bradley_terry_metrics


def split_pairs(values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Preference batches hold 2B rows: chosen first, rejected second."""
    half = values.shape[0] // 2
    return values[:half], values[half:]


def reward_objective(
    scores: torch.Tensor, margin: float = 0.0
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Bradley-Terry loss of the ``(2B,)`` scores of a padded preference batch (chosen rows
    first) and its metrics (``loss``, accuracy, margins)."""
    chosen, rejected = split_pairs(scores)
    loss = bradley_terry_loss(chosen, rejected, margin=margin)
    metrics = bradley_terry_metrics(chosen.detach(), rejected.detach())
    metrics["loss"] = float(loss.detach())
    return loss, metrics

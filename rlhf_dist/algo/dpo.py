"""Direct Preference Optimization losses (Rafailov et al. 2023) and variants.

All take h = (log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r)), per pair (B,).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ._common import check_same_shape, lookup, to_compute


def _sigmoid(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    # DPO eq. 7; with label_smoothing eps it is conservative DPO (cDPO, Mitchell 2023).
    eps = label_smoothing
    return -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)


def _ipo(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    # IPO (Azar et al. 2023, eq. 17) with tau = beta: (h - 1/(2 tau))^2.
    return (h - 1 / (2 * beta)) ** 2


def _hinge(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    # SLiC-style hinge (Zhao et al. 2023): relu(1 - beta h).
    return torch.relu(1 - beta * h)


DPO_LOSSES: dict[str, Callable[[torch.Tensor, float, float], torch.Tensor]] = {
    "sigmoid": _sigmoid,
    "ipo": _ipo,
    "hinge": _hinge,
}


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss and implicit rewards.

    All inputs (B,) sequence log-probs (see ``sequence_logps``).  Returns
    ``(losses, chosen_rewards, rejected_rewards)``, each (B,) float32 (float64 for float64
    inputs); rewards are beta * (policy - ref), detached.  Reduce ``losses`` with ``.mean()``.
    ``loss_type`` in :data:`DPO_LOSSES`; beta > 0; 0 <= label_smoothing < 0.5, and nonzero
    label_smoothing only for "sigmoid".  Violations -> ValueError.
    """
    loss_fn = lookup(DPO_LOSSES, loss_type, "DPO loss_type")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(
            f"label_smoothing is only defined for loss_type 'sigmoid', not {loss_type!r}"
        )
    check_same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    pc, pr, rc, rr = to_compute(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )
    chosen_logratio = pc - rc.detach()
    rejected_logratio = pr - rr.detach()
    losses = loss_fn(chosen_logratio - rejected_logratio, beta, label_smoothing)
    return losses, beta * chosen_logratio.detach(), beta * rejected_logratio.detach()

"""DPO's successors: SimPO and ORPO (no reference model) and KTO (unpaired feedback).

Conventions as :func:`~rlhf_dist.algo.dpo.dpo_loss`: per-row losses ``(B,)`` (reduce with
``.mean()``) and the implicit rewards, detached; computed in float32 for 16-bit inputs, float64
for float64 inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import check_same_shape, to_compute

# the DPO job's loss types that use no reference model (dpo.loss_type; DPO_LOSSES need one)
REFERENCE_FREE_LOSSES = ("simpo", "orpo")


def _check_beta(beta: float) -> None:
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def simpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float,
               gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO (Meng et al. 2024, eq. 6): ``-log σ(β (c − r) − γ)`` on the length-normalised
    (mean per response token) log-probs ``c``, ``r`` of each pair, ``(B,)``; no reference.

    Returns ``(losses, β c, β r)``; ``gamma`` >= 0 is the target reward margin.
    """
    _check_beta(beta)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    check_same_shape(chosen_avg_logps=chosen_avg_logps, rejected_avg_logps=rejected_avg_logps)
    c, r = to_compute(chosen_avg_logps, rejected_avg_logps)
    losses = -F.logsigmoid(beta * (c - r) - gamma)
    return losses, beta * c.detach(), beta * r.detach()


MIN_NEG_LOGP = 1e-6  # orpo_loss: mean log-probs above -this are taken as -this


def _log1m_exp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 − e^x)`` for ``x < 0``, accurate near 0 (``log(−expm1(x))``)."""
    return torch.log(-torch.expm1(x))


def orpo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO's odds-ratio term (Hong et al. 2024, eq. 6-7) on mean per-token log-probs ``c``,
    ``r`` ``(B,)``: ``log_odds = (c − r) − (log(1 − e^c) − log(1 − e^r))``, loss
    ``−β log σ(log_odds)``.  The job adds the chosen answers' NLL (``L_SFT + L_OR``); no
    reference.  Returns ``(losses, β c, β r)``.  A mean log-prob of 0 (a certain answer, which
    float32 rounding gives a confident one-token answer) has no odds: it is taken as
    ``-MIN_NEG_LOGP``.
    """
    _check_beta(beta)
    check_same_shape(chosen_avg_logps=chosen_avg_logps, rejected_avg_logps=rejected_avg_logps)
    c, r = (x.clamp(max=-MIN_NEG_LOGP) for x in to_compute(chosen_avg_logps,
                                                           rejected_avg_logps))
    log_odds = (c - r) - (_log1m_exp(c) - _log1m_exp(r))
    losses = -beta * F.logsigmoid(log_odds)
    return losses, beta * c.detach(), beta * r.detach()


def kto_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, desirable: torch.Tensor,
             kl: torch.Tensor | float, beta: float, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO (Ethayarajh et al. 2024, eq. 8) on summed log-probs ``(B,)`` of unpaired answers.

    ``desirable`` a bool mask ``(B,)``; ``kl`` the batch estimate of KL(π‖π_ref) (detached and
    clamped at 0 here, as the paper's reference point z0).  With ``h = logratio = policy −
    ref``: desirable rows ``w_d (1 − σ(β (h − kl)))``, undesirable ``w_u (1 − σ(β (kl − h)))``.
    Returns ``(losses, β h)``, the latter detached.
    """
    _check_beta(beta)
    if desirable_weight < 0 or undesirable_weight < 0:
        raise ValueError("desirable_weight and undesirable_weight must be >= 0, got "
                         f"{desirable_weight}, {undesirable_weight}")
    check_same_shape(policy_logps=policy_logps, ref_logps=ref_logps, desirable=desirable)
    pol, ref = to_compute(policy_logps, ref_logps)
    z0 = torch.as_tensor(kl, dtype=pol.dtype, device=pol.device).detach().clamp(min=0)
    h = pol - ref.detach()
    good = desirable.to(torch.bool)
    losses = torch.where(good, desirable_weight * (1 - torch.sigmoid(beta * (h - z0))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z0 - h))))
    return losses, beta * h.detach()

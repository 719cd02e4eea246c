"""DPO's successors: SimPO and ORPO (no reference model) and KTO (unpaired feedback), and
the pairs of online DPO (the best and worst sampled answer of each prompt).

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
# the DPO job's loss types on unpaired rows {prompt, completion, label} (with a reference)
UNPAIRED_LOSSES = ("kto",)
# KTO's recommended range of lambda_D n_D / (lambda_U n_U) (Ethayarajh et al. 2024, eq. 9)
KTO_RECOMMENDED_RATIO = (1.0, 4.0 / 3.0)


def _check_beta(beta: float) -> None:
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def simpo_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def orpo_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float
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
    c, r = (x.clamp(max=-MIN_NEG_LOGP) for x in to_compute(chosen_avg_logps, rejected_avg_logps))
    log_odds = (c - r) - (_log1m_exp(c) - _log1m_exp(r))
    losses = -beta * F.logsigmoid(log_odds)
    return losses, beta * c.detach(), beta * r.detach()


def kto_loss(
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor | float,
    beta: float,
    desirable_weight: torch.Tensor | float = 1.0,
    undesirable_weight: torch.Tensor | float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO (Ethayarajh et al. 2024, eq. 8) on summed log-probs ``(B,)`` of unpaired answers.

    ``desirable`` a bool mask ``(B,)``; ``kl`` the batch estimate of KL(π‖π_ref) (detached and
    clamped at 0 here, as the paper's reference point z0).  With ``h = logratio = policy −
    ref``: desirable rows ``w_d (1 − σ(β (h − kl)))``, undesirable ``w_u (1 − σ(β (kl − h)))``;
    the weights ``λ_D``, ``λ_U`` are numbers or per-row ``(B,)`` tensors.
    Returns ``(losses, β h)``, the latter detached.
    """
    _check_beta(beta)
    if any(float(torch.as_tensor(w).min()) < 0 for w in (desirable_weight, undesirable_weight)):
        raise ValueError(
            "desirable_weight and undesirable_weight must be >= 0, got "
            f"{desirable_weight}, {undesirable_weight}"
        )
    check_same_shape(policy_logps=policy_logps, ref_logps=ref_logps, desirable=desirable)
    pol, ref = to_compute(policy_logps, ref_logps)
    z0 = torch.as_tensor(kl, dtype=pol.dtype, device=pol.device).detach().clamp(min=0)
    h = pol - ref.detach()
    good = desirable.to(torch.bool)
    losses = torch.where(
        good,
        desirable_weight * (1 - torch.sigmoid(beta * (h - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - h))),
    )
    return losses, beta * h.detach()


def kto_class_weights(
    n_desirable: int,
    n_undesirable: int,
    desirable_weight: float,
    undesirable_weight: float,
    balance: float | None = None,
) -> tuple[float, float]:
    """KTO's ``(λ_D, λ_U)`` for a training set of ``n_desirable`` / ``n_undesirable`` rows:
    the given weights, or with ``balance = r`` ``λ_D = r λ_U n_U / n_D`` so that
    ``λ_D n_D / (λ_U n_U) = r`` (Ethayarajh et al. 2024, eq. 9: r in [1, 4/3])."""
    if balance is None:
        return float(desirable_weight), float(undesirable_weight)
    if balance <= 0:
        raise ValueError(f"balance must be > 0, got {balance}")
    if n_desirable <= 0 or n_undesirable <= 0:
        raise ValueError(
            f"balancing needs desirable and undesirable rows, got {n_desirable} and {n_undesirable}"
        )
    return balance * undesirable_weight * n_undesirable / n_desirable, float(undesirable_weight)


def kto_weight_ratio(
    n_desirable: int, n_undesirable: int, desirable_weight: float, undesirable_weight: float
) -> float:
    """``λ_D n_D / (λ_U n_U)`` (eq. 9's quantity); ``inf`` without undesirable weight."""
    denominator = undesirable_weight * n_undesirable
    return desirable_weight * n_desirable / denominator if denominator else float("inf")


def best_worst_pairs(
    scores: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Online DPO's pairs: ``scores`` ``(P·n,)`` of ``n`` consecutive answers per prompt ->
    ``(chosen, rejected, decisive)`` ``(P,)``: the row index of each prompt's best and worst
    answer (the first of equals) and whether the best scores strictly higher (a tie, all
    answers equal, gives no preference)."""
    if n < 2:
        raise ValueError(f"n must be >= 2 answers per prompt, got {n}")
    if scores.dim() != 1 or scores.shape[0] % n:
        raise ValueError(f"scores must be (P * n,) with n={n}, got {tuple(scores.shape)}")
    groups = scores.reshape(-1, n)
    offset = torch.arange(groups.shape[0], device=scores.device) * n
    best, worst = groups.max(dim=1), groups.min(dim=1)
    chosen = offset + groups.argmax(dim=1)
    rejected = offset + groups.argmin(dim=1)
    return chosen, rejected, best.values > worst.values


def online_pair_weights(decisive: torch.Tensor, step_size: int) -> torch.Tensor:
    """Per-pair weights ``(P,)`` that make each optimiser step's mean loss the mean over its
    decisive pairs: the P pairs go to steps of ``step_size`` in order; in a step with K
    decisive pairs each weighs ``step_size / K``, a tie 0 (a step of ties: all 0)."""
    if decisive.dim() != 1 or decisive.shape[0] % step_size:
        raise ValueError(
            f"decisive must be (P,) with P a multiple of step_size={step_size}, "
            f"got {tuple(decisive.shape)}"
        )
    steps = decisive.to(torch.float32).reshape(-1, step_size)
    count = steps.sum(dim=1, keepdim=True)
    return (steps * step_size / count.clamp(min=1)).reshape(-1)

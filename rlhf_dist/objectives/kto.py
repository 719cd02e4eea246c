"""KTO in the DPO job (``dpo.loss_type=kto``; Ethayarajh et al. 2024): unpaired answers with a
desirable / undesirable label, against the frozen reference.

A micro-batch of B rows is collated as B pairs of the ``dpo.layout`` layout
(:class:`~rlhf_dist.data.UnpairedCollator`): the "chosen" side holds each row's own answer
``(x_i, y_i)``, the "rejected" side the mismatched ``(x_i, y_{(i+1) mod B})``.  The policy's
and the reference's log-ratios on the mismatched side estimate the reference point
``z0 = KL(π‖π_ref)`` (sec. 4.1: a biased but convenient estimate from the micro-batch,
detached and clamped at 0), and each own answer gets eq. 8's loss with its class weight
(``kto_weight``, λ_D or λ_U; :func:`kto_datasets` sets them, eq. 9).  So the launcher and the
Ray actor run it through the same layouts, reference rows and update code as DPO.
"""

from __future__ import annotations

import logging
from typing import Dict, Tuple

import torch

from rlhf_dist.algo import KTO_RECOMMENDED_RATIO, kto_class_weights, kto_loss, kto_weight_ratio
from rlhf_dist.config import ConfigError, DPOConfig
from rlhf_dist.data import PAIR_COLLATORS, UnpairedCollator, build_unpaired_dataset
from rlhf_dist.objectives.pairs import PAIR_LAYOUTS, PairLogps

log = logging.getLogger(__name__)


def kto_objective(
    policy: PairLogps,
    ref_own: torch.Tensor,
    ref_mismatched: torch.Tensor,
    desirable: torch.Tensor,
    weights: torch.Tensor,
    beta: float,
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Loss of B unpaired rows given the policy's token log-probs of the own (``chosen``) and
    mismatched (``rejected``) answers and the reference's summed log-probs of both."""
    own, mismatched = policy.sequences()
    z0 = (mismatched - ref_mismatched.to(mismatched.dtype)).mean().detach()
    losses, rewards = kto_loss(own, ref_own, desirable, z0, beta, weights, weights)
    loss = losses.mean()
    good = desirable.to(torch.bool)
    point = beta * z0.clamp(min=0)  # the reference point, in reward units (β z0)
    sign = good.to(rewards.dtype) * 2 - 1
    metrics = {
        "kto_loss": float(loss.detach()),
        "kl": float(z0.clamp(min=0)),
        # a row on its label's side of the reference point: desirable above, else below
        "reward_accuracy": float(((rewards > point) == good).float().mean()),
        "kto_margin": float((sign * (rewards - point)).mean()),
        "desirable_frac": float(good.float().mean()),
        "completion_logp": float(own.detach().mean()),
        "loss": float(loss.detach()),
    }
    return loss, metrics


def kto_batch_loss(
    model, batch, ref_rows: torch.Tensor, dpo: DPOConfig
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """:func:`kto_objective` of a collated batch, the reference's log-probs given as rows."""
    layout = PAIR_LAYOUTS[dpo.layout]
    desirable, _ = layout.split_rows(batch["desirable"])
    weights, _ = layout.split_rows(batch["kto_weight"])
    return kto_objective(
        layout.logps(model, batch), *layout.split_rows(ref_rows), desirable, weights, dpo.beta
    )


def kto_datasets(data_cfg, dpo: DPOConfig, tokenizer):
    """(train, eval or None, collator, start metrics) of unpaired rows: the class weights
    (λ_D, λ_U) from ``dpo`` and the training set's counts (``dpo.kto_balance``, eq. 9), each
    row's carried in its batch."""
    train = build_unpaired_dataset(data_cfg, tokenizer, "train")
    eval_set = build_unpaired_dataset(data_cfg, tokenizer, "eval")
    n_d = sum(bool(e["desirable"]) for e in train)
    n_u = len(train) - n_d
    try:
        w_d, w_u = kto_class_weights(
            n_d, n_u, dpo.kto_desirable_weight, dpo.kto_undesirable_weight, dpo.kto_balance
        )
    except ValueError as err:
        raise ConfigError(f"dpo.kto_balance: {err} in the training set") from None
    ratio = kto_weight_ratio(n_d, n_u, w_d, w_u)
    low, high = KTO_RECOMMENDED_RATIO
    if not low <= ratio <= high:
        log.warning(
            "dpo.loss_type=kto: lambda_D n_D / (lambda_U n_U) = %.3g (%d desirable, "
            "%d undesirable rows, lambda_D=%g, lambda_U=%g) is outside [1, 4/3], the "
            "range the paper recommends (eq. 9); dpo.kto_balance=1 sets lambda_D for "
            "it",
            ratio,
            n_d,
            n_u,
            w_d,
            w_u,
        )
    collate = UnpairedCollator(
        PAIR_COLLATORS[dpo.layout](tokenizer.pad_token_id),
        tokenizer.eos_token_id,
        data_cfg.max_length,
        (w_d, w_u),
    )
    metrics = {
        "kto/desirable_rows": float(n_d),
        "kto/undesirable_rows": float(n_u),
        "kto/desirable_weight": w_d,
        "kto/undesirable_weight": w_u,
        "kto/weight_ratio": ratio,
    }
    return train, eval_set, collate, metrics

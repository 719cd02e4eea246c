"""The DPO objective of the project: the launcher trainer (``trainers/dpo.py``) and the Ray
actor (``workers/role_workers.py``) both call it (through :func:`dpo_batch_loss`) on batches
of the layout ``dpo.layout`` names (:mod:`rlhf_dist.objectives.pairs`)."""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch

from rlhf_dist.algo import dpo_loss, orpo_loss, simpo_loss
from rlhf_dist.config import DPOConfig
from rlhf_dist.objectives.pairs import PAIR_LAYOUTS, PairLogps


def reference_rows(model, batch, dpo: DPOConfig) -> torch.Tensor:
    """A frozen model's per-response log-probs of ``batch`` as a per-row tensor of its
    layout (IPO uses the length-averaged form)."""
    layout = PAIR_LAYOUTS[dpo.layout]
    return layout.rows(*layout.logps(model, batch).sequences(average=dpo.loss_type == "ipo"))


def no_reference_rows(batch, dpo: DPOConfig) -> torch.Tensor:
    """The rows a reference would give, zeros, for a loss that reads none (SimPO, ORPO)."""
    layout = PAIR_LAYOUTS[dpo.layout]
    zeros = torch.zeros(layout.num_pairs(batch))
    return layout.rows(zeros, zeros)


# reference-free losses on the mean per-token log-probs: (losses, chosen, rejected rewards),
# and whether the method adds the chosen answers' NLL (ORPO's L_SFT)
REFERENCE_FREE: Dict[str, Tuple[Callable, bool]] = {
    "simpo": (lambda c, r, dpo: simpo_loss(c, r, dpo.beta, dpo.simpo_gamma), False),
    "orpo": (lambda c, r, dpo: orpo_loss(c, r, dpo.beta), True),
}


def _pair_losses(policy: PairLogps, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
                 dpo: DPOConfig):
    """``(losses, chosen_rewards, rejected_rewards, chosen_logp, adds_nll)`` of the loss type."""
    if dpo.loss_type in REFERENCE_FREE:
        loss_fn, adds_nll = REFERENCE_FREE[dpo.loss_type]
        chosen, rejected = policy.sequences(average=True)
        return (*loss_fn(chosen, rejected, dpo), chosen, adds_nll)
    chosen, rejected = policy.sequences(average=dpo.loss_type == "ipo")
    return (*dpo_loss(chosen, rejected, ref_chosen, ref_rejected, dpo.beta,
                      loss_type=dpo.loss_type, label_smoothing=dpo.label_smoothing),
            chosen, False)


def dpo_objective(policy: PairLogps, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
                  dpo: DPOConfig) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Loss of B pairs, given the policy's token log-probs and the reference's per-response
    log-probs (ignored by SimPO / ORPO)."""
    losses, chosen_rewards, rejected_rewards, policy_chosen, adds_nll = _pair_losses(
        policy, ref_chosen, ref_rejected, dpo)
    loss = losses.mean()
    metrics = {"dpo_loss": float(loss.detach()),
               "reward_accuracy": float((chosen_rewards > rejected_rewards).float().mean()),
               "reward_margin": float((chosen_rewards - rejected_rewards).mean()),
               "chosen_reward": float(chosen_rewards.mean()),
               "rejected_reward": float(rejected_rewards.mean()),
               "chosen_logp": float(policy_chosen.detach().mean())}
    nll_coef = dpo.nll_coef + (1.0 if adds_nll else 0.0)  # ORPO: L_SFT + L_OR
    if nll_coef > 0:
        nll = policy.chosen_nll()
        loss = loss + nll_coef * nll
        metrics["nll"] = float(nll.detach())
    metrics["loss"] = float(loss.detach())
    return loss, metrics


def dpo_batch_loss(model, batch, ref_rows: torch.Tensor,
                   dpo: DPOConfig) -> Tuple[torch.Tensor, Dict[str, float]]:
    """``dpo_objective`` of a collated batch, the reference's log-probs given as rows."""
    layout = PAIR_LAYOUTS[dpo.layout]
    return dpo_objective(layout.logps(model, batch), *layout.split_rows(ref_rows), dpo)


def dpo_eval_sums(model, batch, ref_rows: torch.Tensor, dpo: DPOConfig) -> Dict[str, float]:
    """A batch's DPO metrics times its pairs, plus ``count`` (pairs): summed over batches and
    ranks, then divided by the count — the eval of the launcher and of the Ray actor."""
    _, metrics = dpo_batch_loss(model, batch, ref_rows, dpo)
    n = float(PAIR_LAYOUTS[dpo.layout].num_pairs(batch))
    return {**{k: v * n for k, v in metrics.items()}, "count": n}

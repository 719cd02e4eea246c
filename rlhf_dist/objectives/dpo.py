"""The DPO objective of the project: the launcher trainer (``trainers/dpo.py``) and the Ray
actor (``workers/role_workers.py``) both call it (through :func:`dpo_batch_loss`) on batches
of the layout ``dpo.layout`` names (:mod:`rlhf_dist.objectives.pairs`), built by
:func:`dpo_datasets`.  A loss on unpaired rows (KTO, :mod:`.kto`) brings its own batch loss and
datasets (:data:`UNPAIRED_OBJECTIVES`).  Pairs may carry a weight each (``pair_weight``: online
DPO's, 0 for a tie); the loss and metrics are then weighted means."""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch

from rlhf_dist.algo import dpo_loss, orpo_loss, simpo_loss
from rlhf_dist.config import DPOConfig
from rlhf_dist.data import preference_datasets
from rlhf_dist.objectives.kto import kto_batch_loss, kto_datasets
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


def _pair_losses(
    policy: PairLogps, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, dpo: DPOConfig
):
    """``(losses, chosen_rewards, rejected_rewards, chosen_logp, adds_nll)`` of the loss type."""
    if dpo.loss_type in REFERENCE_FREE:
        loss_fn, adds_nll = REFERENCE_FREE[dpo.loss_type]
        chosen, rejected = policy.sequences(average=True)
        return (*loss_fn(chosen, rejected, dpo), chosen, adds_nll)
    chosen, rejected = policy.sequences(average=dpo.loss_type == "ipo")
    return (
        *dpo_loss(
            chosen,
            rejected,
            ref_chosen,
            ref_rejected,
            dpo.beta,
            loss_type=dpo.loss_type,
            label_smoothing=dpo.label_smoothing,
        ),
        chosen,
        False,
    )


def _mean(values: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    return values.mean() if weights is None else (values * weights.to(values.dtype)).mean()


def _chosen_nll(policy: PairLogps, weights: Optional[torch.Tensor]) -> torch.Tensor:
    """The chosen answers' token NLL; weighted, each token counts its pair's weight (a token
    mean over the pairs of weight > 0 when they share one weight; 0 with none)."""
    if weights is None:
        return policy.chosen_nll()
    per_token = policy.chosen_mask * weights.to(policy.chosen.dtype)[:, None]
    return -(policy.chosen * per_token).sum() / per_token.sum().clamp(min=1e-12)


def dpo_objective(
    policy: PairLogps,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    dpo: DPOConfig,
    weights: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Loss of B pairs, given the policy's token log-probs and the reference's per-response
    log-probs (ignored by SimPO / ORPO); ``weights`` ``(B,)``: each pair's (default 1)."""
    losses, chosen_rewards, rejected_rewards, policy_chosen, adds_nll = _pair_losses(
        policy, ref_chosen, ref_rejected, dpo
    )
    loss = _mean(losses, weights)
    metrics = {
        "dpo_loss": float(loss.detach()),
        "reward_accuracy": float(_mean((chosen_rewards > rejected_rewards).float(), weights)),
        "reward_margin": float(_mean(chosen_rewards - rejected_rewards, weights)),
        "chosen_reward": float(_mean(chosen_rewards, weights)),
        "rejected_reward": float(_mean(rejected_rewards, weights)),
        "chosen_logp": float(_mean(policy_chosen.detach(), weights)),
    }
    nll_coef = dpo.nll_coef + (1.0 if adds_nll else 0.0)  # ORPO: L_SFT + L_OR
    if nll_coef > 0:
        nll = _chosen_nll(policy, weights)
        loss = loss + nll_coef * nll
        metrics["nll"] = float(nll.detach())
    metrics["loss"] = float(loss.detach())
    return loss, metrics


def pair_batch_loss(
    model, batch, ref_rows: torch.Tensor, dpo: DPOConfig
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """``dpo_objective`` of a collated batch of pairs, the reference's log-probs given as rows
    (and the pairs' weights, when the batch carries ``pair_weight`` rows)."""
    layout = PAIR_LAYOUTS[dpo.layout]
    weights = layout.split_rows(batch["pair_weight"])[0] if "pair_weight" in batch else None
    return dpo_objective(layout.logps(model, batch), *layout.split_rows(ref_rows), dpo, weights)


class UnpairedObjective(NamedTuple):
    """A loss type on unpaired rows: its batch loss and its datasets (``dpo_datasets``'s
    return)."""

    batch_loss: Callable
    datasets: Callable


# dpo.loss_type -> the objective of a loss on unpaired rows (algo.UNPAIRED_LOSSES)
UNPAIRED_OBJECTIVES: Dict[str, UnpairedObjective] = {
    "kto": UnpairedObjective(kto_batch_loss, kto_datasets),
}


def dpo_batch_loss(
    model, batch, ref_rows: torch.Tensor, dpo: DPOConfig
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """The loss of ``dpo.loss_type`` on a collated batch, the reference's log-probs given as
    rows: pairs (:func:`pair_batch_loss`) or unpaired rows."""
    unpaired = UNPAIRED_OBJECTIVES.get(dpo.loss_type)
    return (unpaired.batch_loss if unpaired else pair_batch_loss)(model, batch, ref_rows, dpo)


def dpo_datasets(data_cfg, dpo: DPOConfig, tokenizer):
    """(train, eval or None, collator, start metrics) of the DPO job -- launcher and Ray
    alike: preference pairs in ``dpo.layout``'s collator, or the unpaired rows of KTO."""
    unpaired = UNPAIRED_OBJECTIVES.get(dpo.loss_type)
    if unpaired:
        return unpaired.datasets(data_cfg, dpo, tokenizer)
    return (*preference_datasets(data_cfg, tokenizer, dpo.layout), {})


def dpo_eval_sums(model, batch, ref_rows: torch.Tensor, dpo: DPOConfig) -> Dict[str, float]:
    """A batch's DPO metrics times its pairs (KTO: rows), plus ``count``: summed over batches
    and ranks, then divided by the count — the eval of the launcher and of the Ray actor."""
    _, metrics = dpo_batch_loss(model, batch, ref_rows, dpo)
    n = float(PAIR_LAYOUTS[dpo.layout].num_pairs(batch))
    return {**{k: v * n for k, v in metrics.items()}, "count": n}

"""What the role workers run on their engines, free of Ray: the one minibatch-update helper
(actor, critic, DPO on Ray), a PPO epoch over a rank's share of the experience, micro-batched
forwards and the reference's log-probs."""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Tuple

import torch

from rlhf_dist.config import Config
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.protocol import Batch
from rlhf_dist.utils import mean_rows

Metrics = Dict[str, float]


def update_minibatch(
    engine: ModelEngine,
    micro_batches: Iterable[Batch],
    loss_fn: Callable[[Batch], Tuple[torch.Tensor, Metrics]],
) -> Metrics:
    """One optimiser step over this rank's micro-batches (DeepSpeed accumulates and steps on
    the boundary) — the one update helper of the actor, the critic and DPO on Ray.
    Metrics are micro-batch means."""
    engine.train()
    rows: List[Metrics] = []
    for micro in micro_batches:
        loss, metrics = loss_fn(micro)
        engine.backward(loss)
        engine.step()
        rows.append(metrics)
    return mean_rows(rows)


def epoch_updates(
    engine: ModelEngine,
    share: Batch,
    minibatches: List[torch.Tensor],
    micro_batch_size: int,
    loss_fn: Callable[[Batch], Tuple[torch.Tensor, Metrics]],
) -> List[Metrics]:
    """One PPO epoch on this rank: an optimiser step per minibatch, ``minibatches`` holding
    indices into the rank's ``share`` of the iteration's experience (``learner_plan``)."""
    return [
        update_minibatch(engine, share.index_select(index).split(micro_batch_size), loss_fn)
        for index in minibatches
    ]


def in_micro_batches(
    batch: Batch, size: int, forward: Callable[[Batch], torch.Tensor]
) -> torch.Tensor:
    """Forward a rank's share in micro-batches of ``size`` rows and concatenate; sizes are
    validated so every rank runs the same number of (collective, under ZeRO-3) forwards."""
    return torch.cat([forward(micro) for micro in batch.split(size)])


def reference_logprobs(cfg: Config, model, batch: Batch) -> Batch:
    """The reference's ``logprobs`` of ``batch`` under ``model`` (a frozen engine, or a LoRA
    actor's base), at the temperature of the actor's behaviour log-probs, so KL compares like
    with like."""
    from rlhf_dist.models import action_logprobs
    from rlhf_dist.rollout import sampling_temperature

    temperature = sampling_temperature(cfg.rollout)
    return Batch(
        {
            "logprobs": in_micro_batches(
                batch, cfg.train.micro_batch_size, lambda m: action_logprobs(model, m, temperature)
            )
        }
    )


def reference_sequence_logps(cfg: Config, model, batch: Batch) -> Batch:
    """DPO: the reference's per-response log-probs (``ref_logps``) of a preference batch."""
    from rlhf_dist.objectives import reference_rows

    return Batch({"ref_logps": reference_rows(model, batch, cfg.dpo)})

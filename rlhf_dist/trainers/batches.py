"""Deterministic, resumable walk over a dataset, split across data-parallel ranks.

The order of an epoch depends only on ``(seed, epoch)``, so a resumed run sees exactly the
micro-batches an uninterrupted run would have seen.  Every rank gets the same number of
micro-batches (ZeRO-3 forwards are collective, so unequal counts would hang).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import torch

from rlhf_dist.data.errors import DataError
from rlhf_dist.data.order import epoch_order


def example_length(example: dict) -> int:
    """Tokens of a tokenised example: all its ``*input_ids`` fields (both sides of a pair)."""
    return sum(len(v) for k, v in example.items() if k.endswith("input_ids"))


def rank_micro_batches(
    order: Sequence[int], rank: int, world_size: int, micro_batch_size: int, drop_last: bool = True
) -> List[List[int]]:
    """Rank ``rank``'s micro-batches: the global batch ``i`` holds ``world × micro`` examples
    and rank r takes its r-th slice.  Without ``drop_last`` the tail is cut to a multiple of
    the world size only (every rank still gets equally many, possibly short, batches)."""
    per_global = world_size * micro_batch_size
    if drop_last:
        usable = len(order) - len(order) % per_global
        return [
            list(order[start + rank * micro_batch_size : start + (rank + 1) * micro_batch_size])
            for start in range(0, usable, per_global)
        ]
    usable = len(order) - len(order) % world_size
    mine = list(order[rank:usable:world_size])
    return [mine[i : i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]


def eval_micro_batches(
    num_examples: int, rank: int, world_size: int, batch_size: int
) -> List[List[int]]:
    """Rank ``rank``'s share of an eval set, in order (:func:`rank_micro_batches` without
    ``drop_last``)."""
    return rank_micro_batches(
        list(range(num_examples)), rank, world_size, batch_size, drop_last=False
    )


def steps_per_epoch(
    num_examples: int, world_size: int, micro_batch_size: int, accumulation: int
) -> int:
    micro = num_examples // (world_size * micro_batch_size)
    return micro // accumulation


@dataclass
class StepSampler:
    """Which examples rank r sees at optimiser step s of a run — a pure function of the
    arguments, so a resumed run (and DPO on Ray, which collates for every rank) sees
    exactly the micro-batches of an uninterrupted launcher run."""

    num_examples: int
    seed: int
    world_size: int
    micro_batch_size: int
    accumulation: int
    lengths: Optional[Sequence[int]] = None  # set: group_by_length

    @classmethod
    def for_dataset(
        cls,
        dataset,
        seed: int,
        world_size: int,
        micro_batch_size: int,
        accumulation: int,
        group_by_length: bool,
    ) -> "StepSampler":
        lengths = (
            [example_length(dataset[i]) for i in range(len(dataset))] if group_by_length else None
        )
        sampler = cls(len(dataset), seed, world_size, micro_batch_size, accumulation, lengths)
        if sampler.steps_per_epoch == 0:  # a data problem (too few good rows): one line, exit 2
            raise DataError(
                f"data: {len(dataset)} training examples make no full step of "
                f"{world_size} ranks × train.micro_batch_size={micro_batch_size} × "
                f"{accumulation} accumulation steps (train.train_batch_size)"
            )
        return sampler

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(
            self.num_examples, self.world_size, self.micro_batch_size, self.accumulation
        )

    def micro_batches(self, step: int, rank: int) -> List[List[int]]:
        """Rank ``rank``'s ``accumulation`` micro-batches (example indices) of ``step``.

        Length grouping cuts the order into whole optimiser steps (``world × micro ×
        accumulation`` examples), so which examples a step trains on does not depend on how
        it is split over ranks and accumulation (Ray DPO's one rank with accumulation 2
        sees the launcher's two ranks' examples)."""
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        order = epoch_order(
            self.num_examples,
            self.seed,
            epoch,
            lengths=self.lengths,
            batch_size=self.world_size * self.micro_batch_size * self.accumulation,
        )
        micro = rank_micro_batches(order, rank, self.world_size, self.micro_batch_size)
        start = in_epoch * self.accumulation
        return micro[start : start + self.accumulation]


def to_device(batch: dict, device) -> dict:
    """A collated batch with its tensors on ``device`` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def iterate(dataset, batches: Sequence[List[int]], collate) -> Iterator[dict]:
    for indices in batches:
        yield collate([dataset[i] for i in indices])

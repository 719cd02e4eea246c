"""The experience of one PPO iteration, split into shuffled minibatches for ``ppo_epochs``
passes: :func:`learner_plan` (what each data-parallel rank of a learner group trains on) and
:class:`ReplayBuffer` (the same minibatches in one process)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional

import torch

from rlhf_dist.data.order import epoch_order
from rlhf_dist.protocol import Batch
from rlhf_dist.utils.seeding import MINIBATCH_ORDER


def epoch_permutation(size: int, seed: int, epoch: int) -> torch.Tensor:
    """Row order of ``epoch``: depends only on ``(seed, epoch)`` (:func:`epoch_order` of the
    minibatch-order stream)."""
    return torch.tensor(epoch_order(size, seed, epoch, stream=MINIBATCH_ORDER), dtype=torch.long)


@dataclass
class RankPlan:
    """One rank's part of an iteration's updates.  ``rows``: the experience rows it trains
    on (ascending; its share, sent to it once); ``steps[epoch][j]``: indices into ``rows`` of
    its part of minibatch ``j`` of ``epoch`` (one optimiser step each)."""

    rows: torch.Tensor
    steps: List[List[torch.Tensor]]


def learner_plan(
    size: int, mini_batch_size: int, epochs: int, seed: int, world_size: int = 1
) -> List[RankPlan]:
    """Per rank of a learner group of ``world_size``: minibatch ``j`` of ``epoch`` holds rows
    ``epoch_permutation(size, seed, epoch)[j·m:(j+1)·m]`` (``m = mini_batch_size``) and rank
    ``r`` takes its ``r``-th slice (``Batch.chunk``'s split: sizes differ by at most one,
    larger first).  With one epoch each rank's share is ``size / world_size`` rows."""
    if mini_batch_size < 1 or size % mini_batch_size:
        raise ValueError(
            f"mini_batch_size={mini_batch_size} does not divide the {size} rows of experience"
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 1 <= world_size <= mini_batch_size:
        raise ValueError(
            f"a minibatch of {mini_batch_size} rows cannot be split over {world_size} ranks"
        )
    parts: List[List[List[torch.Tensor]]] = [[] for _ in range(world_size)]  # [rank][epoch]
    for epoch in range(epochs):
        order = epoch_permutation(size, seed, epoch)
        for rank in range(world_size):
            parts[rank].append([])
        for start in range(0, size, mini_batch_size):
            minibatch = order[start : start + mini_batch_size]
            for rank, part in enumerate(torch.tensor_split(minibatch, world_size)):
                parts[rank][epoch].append(part)
    plans = []
    for rank_parts in parts:
        rows = torch.unique(torch.cat([p for epoch in rank_parts for p in epoch]))
        plans.append(
            RankPlan(rows, [[torch.searchsorted(rows, p) for p in epoch] for epoch in rank_parts])
        )
    return plans


class ReplayBuffer:
    """Holds Batches of experience (sequences, masks, old log-probs, values, advantages,
    returns …) on the CPU and serves them as the minibatches of :func:`learner_plan` for one
    rank (the single-process loop of ``examples/ppo_single.py``).

    Added batches must have the same keys and per-row shapes (they are concatenated).
    """

    def __init__(self) -> None:
        self._batches: List[Batch] = []
        self._merged: Optional[Batch] = None

    def add(self, batch: Batch) -> None:
        """Append ``batch`` (moved to the CPU)."""
        self._batches.append(batch.to("cpu"))
        self._merged = None

    def clear(self) -> None:
        self._batches, self._merged = [], None

    def __len__(self) -> int:
        return sum(len(b) for b in self._batches)

    @property
    def data(self) -> Batch:
        """Everything added, as one Batch (rows in insertion order)."""
        if not self._batches:
            raise ValueError("ReplayBuffer is empty: add() experience first")
        if self._merged is None:
            self._merged = Batch.concat(self._batches)
        return self._merged

    def minibatches(self, mini_batch_size: int, epochs: int = 1, seed: int = 0) -> Iterator[Batch]:
        """``epochs`` passes; each pass visits every row exactly once, in
        :func:`epoch_permutation` order, as ``len(self) // mini_batch_size`` minibatches."""
        data = self.data
        try:
            (plan,) = learner_plan(len(self), mini_batch_size, epochs, seed)
        except ValueError as err:
            raise ValueError(f"ReplayBuffer.minibatches: {err}") from None
        share = data.index_select(plan.rows)
        for epoch in plan.steps:
            for index in epoch:
                yield share.index_select(index)

"""ReplayBuffer: the experience of one PPO iteration, served as shuffled minibatches."""
from __future__ import annotations

from typing import Iterator, List, Optional

import torch

from rlhf_dist.protocol import Batch


def epoch_permutation(size: int, seed: int, epoch: int) -> torch.Tensor:
    """Row order of ``epoch``: depends only on ``(seed, epoch)`` (torch.Generator, CPU)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator)


class ReplayBuffer:
    """Holds Batches of experience (sequences, masks, old log-probs, values, advantages,
    returns …) on the CPU; the learner pulls shuffled minibatches for ``ppo_epochs`` passes.

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

    def minibatches(self, mini_batch_size: int, epochs: int = 1, seed: int = 0
                    ) -> Iterator[Batch]:
        """``epochs`` passes; each pass visits every row exactly once, in
        :func:`epoch_permutation` order, as ``len(self) // mini_batch_size`` minibatches."""
        size = len(self)
        if mini_batch_size < 1 or size % mini_batch_size:
            raise ValueError(f"ReplayBuffer.minibatches: mini_batch_size={mini_batch_size} does "
                             f"not divide the {size} rows in the buffer")
        if epochs < 1:
            raise ValueError(f"ReplayBuffer.minibatches: epochs must be >= 1, got {epochs}")
        data = self.data
        for epoch in range(epochs):
            order = epoch_permutation(size, seed, epoch)
            for start in range(0, size, mini_batch_size):
                yield data.index_select(order[start:start + mini_batch_size])

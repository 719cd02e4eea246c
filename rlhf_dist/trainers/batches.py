"""Deterministic, resumable walk over a dataset, split across data-parallel ranks.

The order of an epoch depends only on ``(seed, epoch)``, so a resumed run sees exactly the
micro-batches an uninterrupted run would have seen.  Every rank gets the same number of
micro-batches (ZeRO-3 forwards are collective, so unequal counts would hang).
"""
from __future__ import annotations

from typing import Iterator, List, Sequence

import torch


def epoch_order(num_examples: int, seed: int, epoch: int, shuffle: bool = True) -> List[int]:
    if not shuffle:
        return list(range(num_examples))
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_examples, generator=generator).tolist()


def rank_micro_batches(order: Sequence[int], rank: int, world_size: int,
                       micro_batch_size: int, drop_last: bool = True) -> List[List[int]]:
    """Rank ``rank``'s micro-batches: the global batch ``i`` holds ``world × micro`` examples
    and rank r takes its r-th slice.  Without ``drop_last`` the tail is cut to a multiple of
    the world size only (every rank still gets equally many, possibly short, batches)."""
    per_global = world_size * micro_batch_size
    if drop_last:
        usable = len(order) - len(order) % per_global
        return [list(order[start + rank * micro_batch_size:
                           start + (rank + 1) * micro_batch_size])
                for start in range(0, usable, per_global)]
    usable = len(order) - len(order) % world_size
    mine = list(order[rank:usable:world_size])
    return [mine[i:i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]


def steps_per_epoch(num_examples: int, world_size: int, micro_batch_size: int,
                    accumulation: int) -> int:
    micro = num_examples // (world_size * micro_batch_size)
    return micro // accumulation


def iterate(dataset, batches: Sequence[List[int]], collate) -> Iterator[dict]:
    for indices in batches:
        yield collate([dataset[i] for i in indices])

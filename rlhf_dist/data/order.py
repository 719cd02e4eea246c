"""The order examples are visited in: one permutation per epoch, fixed by ``(seed, epoch)`` and
the stream it is drawn for (:mod:`rlhf_dist.utils.seeding`), optionally grouped by length.
The launcher's and Ray DPO's data order, PPO's prompt order and PPO's minibatch order all come
from :func:`epoch_order`."""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from rlhf_dist.utils.seeding import DATA_ORDER, derive_seed

LENGTH_WINDOW = 50  # batches sorted together by group_by_length


def epoch_order(
    num_examples: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    lengths: Optional[Sequence[int]] = None,
    batch_size: int = 1,
    stream: int = DATA_ORDER,
) -> List[int]:
    """A permutation of the examples, fixed by ``(seed, epoch, stream)``; with ``lengths``,
    grouped so each run of ``batch_size`` holds examples of similar length
    (:func:`group_by_length`)."""
    if not shuffle:
        return list(range(num_examples))
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, stream))
    order = torch.randperm(num_examples, generator=generator).tolist()
    if lengths is None:
        return order
    return group_by_length(order, lengths, batch_size, generator)


def group_by_length(
    order: Sequence[int], lengths: Sequence[int], batch_size: int, generator: torch.Generator
) -> List[int]:
    """Sort each window of ``LENGTH_WINDOW`` batches of ``order`` by length (longest first),
    cut it into batches and shuffle those; a short last batch stays last, so the batch
    boundaries of the result are multiples of ``batch_size``."""
    out: List[int] = []
    span = LENGTH_WINDOW * batch_size
    for start in range(0, len(order), span):
        window = sorted(order[start : start + span], key=lambda i: -lengths[i])
        cut = [window[k : k + batch_size] for k in range(0, len(window), batch_size)]
        full = [b for b in cut if len(b) == batch_size]
        for k in torch.randperm(len(full), generator=generator).tolist():
            out.extend(full[k])
        out.extend(i for b in cut if len(b) < batch_size for i in b)
    return out

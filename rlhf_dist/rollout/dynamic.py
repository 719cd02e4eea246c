"""DAPO's dynamic sampling: keep the prompts whose responses disagree, sample more prompts
until the batch is full (Yu et al. 2025, §3.2).

A *round* is one generation of a prompt batch with its sequence rewards; each prompt is a
group of ``n_samples`` consecutive rows.  :func:`choose_groups` picks, over the rounds, the
first ``want`` informative groups (rewards not all equal, :func:`algo.informative_groups`);
when the rounds run out first, the batch is filled with uninformative groups (their
group-relative advantage is 0: they add no policy gradient, only KL/entropy terms), so every
iteration trains on the same number of rows.  Chosen groups keep the order they were
generated in.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from rlhf_dist.protocol import Batch

from .generate import concat_rollouts

Group = Tuple[int, int]  # (round, group index within the round)


def choose_groups(informative: Sequence[torch.Tensor], want: int) -> Tuple[List[Group], int]:
    """``(chosen, n_filled)``: ``want`` groups over the rounds' (G_r,) bool masks -- the
    informative ones first, then (``n_filled`` of them) uninformative ones, both in generation
    order -- sorted by (round, group).  Fewer than ``want`` groups in all -> ValueError."""
    every = [
        ((r, g), bool(keep))
        for r, mask in enumerate(informative)
        for g, keep in enumerate(mask.tolist())
    ]
    if len(every) < want:
        raise ValueError(f"choose_groups: {len(every)} groups generated, {want} wanted")
    chosen = [rg for rg, keep in every if keep][:want]
    filled = [rg for rg, keep in every if not keep][: want - len(chosen)]
    return sorted(chosen + filled), len(filled)


def gather_groups(
    rounds: Sequence[Batch], chosen: Sequence[Group], n_samples: int, pad_token_id: int
) -> Batch:
    """The rows of the ``chosen`` groups of each round's experience, joined in ``chosen``
    order (sequence-aligned tensors re-padded, :func:`concat_rollouts`)."""
    parts = []
    for r, batch in enumerate(rounds):
        groups = [g for rr, g in chosen if rr == r]
        if groups:
            rows = torch.tensor([g * n_samples + i for g in groups for i in range(n_samples)])
            parts.append(batch.index_select(rows))
    return concat_rollouts(parts, pad_token_id)

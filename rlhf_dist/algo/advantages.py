"""Critic-free advantage estimators over a (prompts, samples) grid of sequence rewards.

Convention: every estimator in :data:`ADVANTAGE_ESTIMATORS` takes rewards of shape (P, K)
-- P prompts x K sampled responses each -- and returns advantages of shape (P, K).
:func:`compute_critic_free_advantages` also accepts flat (B,) rewards with ``n_samples=K``,
where consecutive rows belong to one prompt (row b is prompt b // K), and returns (B,).
Use :func:`expand_to_tokens` to put sequence advantages on the response tokens.
Float32 for bf16/fp16 inputs.  Outputs are detached.
"""

from __future__ import annotations

from typing import Callable

import torch

from ._common import as_bool_mask, lookup, to_compute


def _check_grid(rewards: torch.Tensor, min_k: int, name: str) -> None:
    if rewards.dim() != 2:
        raise ValueError(f"{name}: rewards must be (P, K), got shape {tuple(rewards.shape)}")
    if rewards.shape[1] < min_k:
        raise ValueError(f"{name}: needs K >= {min_k} samples per prompt, got K={rewards.shape[1]}")


def reinforce(rewards: torch.Tensor) -> torch.Tensor:
    """Plain REINFORCE: advantage = return = reward.  (P, K) -> (P, K).  For discounted
    token-level returns use :func:`rlhf_dist.algo.discounted_returns`."""
    _check_grid(rewards, 1, "reinforce")
    return rewards.clone()


def mean_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """r_ik - mean_j r_ij (baseline = mean over the K samples of the prompt).  (P, K); K >= 2
    (one sample is its own baseline: every advantage would be 0)."""
    _check_grid(rewards, 2, "mean_baseline")
    return rewards - rewards.mean(dim=1, keepdim=True)


def rloo(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024): r_ik - mean_{j != k} r_ij.  (P, K);
    K >= 2 else ValueError."""
    _check_grid(rewards, 2, "rloo")
    k = rewards.shape[1]
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)
    return rewards - others_mean


def group_norm(rewards: torch.Tensor, eps: float = 1e-6, unbiased: bool = True) -> torch.Tensor:
    """GRPO (Shao et al. 2024): (r_ik - mean_k) / (std_k + eps) within each prompt.  (P, K).

    ``unbiased=True`` (default, like ``torch.std``) uses the K-1 denominator and needs K >= 2;
    ``unbiased=False`` uses K.  A group with equal rewards gets advantage 0.
    """
    _check_grid(rewards, 2 if unbiased else 1, "group_norm")
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=unbiased)
    return (rewards - mean) / (std + eps)


ADVANTAGE_ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {
    "reinforce": reinforce,
    "mean_baseline": mean_baseline,
    # Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training"): GRPO without the
    # division by the group's std, i.e. the mean baseline -- and never whitened afterwards
    # (rollout/estimators.py); its other half, no per-response length normalisation, is the
    # loss aggregation seq_mean_token_sum_norm (token sums over a constant)
    "dr_grpo": mean_baseline,
    "rloo": rloo,
    "group_norm": group_norm,
}


# The fewest samples per prompt each estimator compares (the config checks
# rollout.n_samples_per_prompt against it; group_norm(unbiased=False) alone would take 1).
MIN_GROUP_SIZE: dict[str, int] = {
    "reinforce": 1,
    "mean_baseline": 2,
    "dr_grpo": 2,
    "rloo": 2,
    "group_norm": 2,
}
# Every name ppo.advantage_estimator takes: the critic-free ones above, and the two computed
# on token rewards (rollout/estimators.py): GAE with a critic, REINFORCE++'s whitened returns.
ADVANTAGE_NAMES: tuple[str, ...] = tuple(sorted({"gae", "reinforce_pp", *ADVANTAGE_ESTIMATORS}))


def get_advantage_estimator(name: str) -> Callable[..., torch.Tensor]:
    """The (P, K) -> (P, K) estimator registered as ``name``; unknown -> ValueError."""
    return lookup(ADVANTAGE_ESTIMATORS, name, "advantage estimator")


@torch.no_grad()
def compute_critic_free_advantages(
    name: str, rewards: torch.Tensor, n_samples: int | None = None, **kwargs
) -> torch.Tensor:
    """Run estimator ``name`` on sequence rewards.

    rewards: (P, K), or (B,) with ``n_samples=K`` (consecutive groups of K rows, B % K == 0).
    Returns the same shape as ``rewards``.  ``kwargs`` go to the estimator (e.g. ``eps``).
    """
    estimator = get_advantage_estimator(name)
    (grid,) = to_compute(rewards)
    if rewards.dim() == 1:
        if n_samples is None or n_samples < 1 or rewards.shape[0] % n_samples:
            raise ValueError(
                f"flat rewards of shape {tuple(rewards.shape)} need n_samples >= 1 dividing B, "
                f"got {n_samples}"
            )
        return estimator(grid.view(-1, n_samples), **kwargs).reshape(-1)
    if n_samples is not None and n_samples != rewards.shape[1]:
        raise ValueError(
            f"n_samples={n_samples} contradicts rewards of shape {tuple(rewards.shape)}"
        )
    return estimator(grid, **kwargs)


def expand_to_tokens(seq_advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Broadcast (B,) sequence advantages onto the (B, T) mask; 0 outside the mask."""
    if seq_advantages.shape != mask.shape[:1]:
        raise ValueError(
            f"seq_advantages {tuple(seq_advantages.shape)} must be (B,) for mask "
            f"{tuple(mask.shape)}"
        )
    (adv,) = to_compute(seq_advantages)
    expanded = adv.unsqueeze(-1).expand(mask.shape)
    return torch.where(
        as_bool_mask(mask), expanded, torch.zeros((), dtype=adv.dtype, device=adv.device)
    )

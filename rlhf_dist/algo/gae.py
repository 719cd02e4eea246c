"""Generalized Advantage Estimation and discounted reward-to-go over masked token sequences.

Mask semantics (both functions): only unmasked positions are time steps.  Walking right to
left, a masked position is skipped -- it neither contributes reward/value nor breaks the
recursion -- so "the next step" of token t is the next *unmasked* token in the row, and the
value after the last unmasked token is 0 (the episode ends).  This handles left padding,
right padding and gaps (e.g. tool outputs inside a multi-turn response).  Masked positions
get advantage 0 and return 0.  Outputs are detached (they are regression/PG targets).
"""

from __future__ import annotations

import torch

from ._common import as_bool_mask, check_same_shape, to_compute


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) advantages and returns.

    rewards, values, mask: (B, T).  Returns ``(advantages, returns)``, each (B, T), with
    returns = advantages + values on unmasked positions and 0 elsewhere.  Float32 for
    bf16/fp16 inputs.
    """
    check_same_shape(rewards=rewards, values=values, mask=mask)
    rewards, values = to_compute(rewards, values)
    m = as_bool_mask(mask)
    B, T = rewards.shape
    zero = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    nextvalues = zero
    lastgaelam = zero
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(T)):
        step = m[:, t]
        # delta_t = r_t + gamma V(s_{t+1}) - V(s_t);  A_t = sum_l (gamma lam)^l delta_{t+l}
        # (Schulman et al. 2016, "High-Dimensional Continuous Control Using GAE", eq. 16),
        # computed backwards as A_t = delta_t + gamma lam A_{t+1}.
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = torch.where(step, delta + gamma * lam * lastgaelam, lastgaelam)
        nextvalues = torch.where(step, values[:, t], nextvalues)
        advantages[:, t] = torch.where(step, lastgaelam, zero)
    returns = torch.where(m, advantages + values, torch.zeros_like(values))
    return advantages, returns


def discounted_returns(
    token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Reward-to-go G_t = r_t + gamma * G_{next unmasked}, (B, T) -> (B, T), 0 off the mask.

    Equal to GAE with V = 0 and lambda = 1, which is how it is computed.
    """
    advantages, _ = gae(token_rewards, torch.zeros_like(token_rewards), mask, gamma, 1.0)
    return advantages

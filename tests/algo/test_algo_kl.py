"""KL estimators and KL-shaped token rewards."""

import math

import pytest
import torch

from rlhf_dist.algo import (
    KL_ESTIMATORS,
    kl_estimate,
    last_token_index,
    place_step_rewards,
    shape_rewards,
)

LOGP = torch.tensor([[-1.0, -2.0]])
REF = torch.tensor([[-1.5, -1.0]])
# logp - ref = 0.5, -1.0 ; logr = ref - logp = -0.5, 1.0
EXPECTED = {
    "k1": [0.5, -1.0],
    "k2": [0.125, 0.5],
    "k3": [math.exp(-0.5) + 0.5 - 1, math.e - 1.0 - 1],
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_estimators_by_hand(kind):
    torch.testing.assert_close(kl_estimate(LOGP, REF, kind), torch.tensor([EXPECTED[kind]]))
    # Inputs exactly representable in bf16: float32 result equal to 1e-6.
    out = kl_estimate(LOGP.bfloat16(), REF.bfloat16(), kind)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([EXPECTED[kind]]))


def test_bf16_random_within_tolerance():
    # bf16 rounding moves log-probs in [-2, 0] by <= 2**-8, so logp - ref (|.| < ~1.5) is off
    # by <= 2**-7 ~ 0.008 and k3 = exp(.) - ... by <= e**1.5 * 0.008; atol 2e-2 on the estimate.
    # (The error comes from rounding the inputs; the estimate itself is computed in float32.)
    torch.manual_seed(0)
    logp = -torch.rand(4, 16) * 2
    ref = logp + torch.randn(4, 16) * 0.3
    for kind in KL_ESTIMATORS:
        full = kl_estimate(logp.double(), ref.double(), kind)
        half = kl_estimate(logp.bfloat16(), ref.bfloat16(), kind)
        torch.testing.assert_close(half.double(), full, atol=2e-2, rtol=0)


def test_unknown_kind_lists_valid_names():
    with pytest.raises(ValueError, match=r"'k4'.*'k1', 'k2', 'k3'"):
        kl_estimate(LOGP, REF, "k4")


def test_last_token_index_ragged():
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1]])
    assert last_token_index(mask).tolist() == [2, 3, 2, 3]
    with pytest.raises(ValueError, match=r"\[1\]"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


def test_shape_rewards_ragged_by_hand():
    logp = torch.tensor(
        [[-1.0, -2.0, -0.5, -9.0], [-9.0, -1.0, -1.0, -3.0], [-2.0, -9.0, -1.0, -9.0]]
    )
    ref = torch.tensor([[-1.5, -1.0, -0.5, 0.0], [0.0, -2.0, -1.0, -1.0], [-1.0, 0.0, -3.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 0, 1, 0]])  # right pad, left pad, gap
    scores = torch.tensor([1.0, 2.0, 3.0])
    kl_coef = 0.1
    expected = []
    for b in range(3):
        row = []
        for t in range(4):
            row.append(-kl_coef * (logp[b, t].item() - ref[b, t].item()) if mask[b, t] else 0.0)
        last = max(t for t in range(4) if mask[b, t])
        row[last] += scores[b].item()
        expected.append(row)
    # e.g. row 0 = [-0.05, 0.1, 1.0, 0.0]; row 1 = [0, -0.1, 0, 2.2]; row 2 = [0.1, 0, 2.8, 0]
    out = shape_rewards(scores, logp, ref, mask, kl_coef)
    torch.testing.assert_close(out, torch.tensor(expected))
    assert out[0].tolist() == pytest.approx([-0.05, 0.1, 1.0, 0.0])
    out3 = shape_rewards(scores, logp, ref, mask, kl_coef, kind="k2")
    assert out3[0, 1].item() == pytest.approx(-0.1 * 0.5 * 1.0)


def test_shape_rewards_empty_row_and_shape_errors():
    logp = torch.zeros(3, 2)
    mask = torch.tensor([[1, 1], [1, 0], [0, 0]])
    with pytest.raises(ValueError, match=r"\[2\]"):
        shape_rewards(torch.zeros(3), logp, logp, mask, 0.1)
    with pytest.raises(ValueError, match="scores"):
        shape_rewards(torch.zeros(2), logp, logp, torch.ones(3, 2), 0.1)


def test_place_step_rewards_moves_them_from_the_last_action_by_hand():
    # row 0: turn ends at 1 (reward 0.5) and 3 (1.0), an observation gap at 2; row 1: no step
    # reward; row 0's score given to shape_rewards, 2.0, is an RM's 0.5 + the steps' 1.5
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]])
    steps = torch.tensor([[0.0, 0.5, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    token_rewards = torch.tensor([[-0.1, -0.1, 0.0, 2.0 - 0.1], [0.0, -0.2, 0.3, 0.0]])
    out = place_step_rewards(token_rewards, steps, mask)
    torch.testing.assert_close(
        out, torch.tensor([[-0.1, -0.1 + 0.5, 0.0, -0.1 + 0.5 + 1.0], [0.0, -0.2, 0.3, 0.0]])
    )
    torch.testing.assert_close(out.sum(-1), token_rewards.sum(-1))
    with pytest.raises(ValueError, match=r"step_rewards rows \[1\].*outside the action mask"):
        place_step_rewards(token_rewards, torch.tensor([[0.0] * 4, [1.0, 0, 0, 0]]), mask)

"""Critic-free advantage estimators on a (P, K) grid."""

import math

import pytest
import torch

from rlhf_dist.algo import (
    ADVANTAGE_ESTIMATORS,
    compute_critic_free_advantages,
    expand_to_tokens,
    get_advantage_estimator,
)

R = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])  # P=2 prompts, K=3 samples
S12 = math.sqrt(12.0)  # row 1: mean 2, deviations -2, -2, 4 -> unbiased var 24/2 = 12
EXPECTED = {
    "reinforce": [[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]],
    "mean_baseline": [[-1.0, 0.0, 1.0], [-2.0, -2.0, 4.0]],
    "dr_grpo": [[-1.0, 0.0, 1.0], [-2.0, -2.0, 4.0]],  # GRPO without the std
    # rloo: r_i - mean of the other two
    "rloo": [[1 - 2.5, 2 - 2.0, 3 - 1.5], [0 - 3.0, 0 - 3.0, 6 - 0.0]],
    # row 0: mean 2, unbiased std 1
    "group_norm": [
        [-1 / (1 + 1e-6), 0.0, 1 / (1 + 1e-6)],
        [-2 / (S12 + 1e-6), -2 / (S12 + 1e-6), 4 / (S12 + 1e-6)],
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_grid_and_flat_by_hand(name):
    expected = torch.tensor(EXPECTED[name])
    torch.testing.assert_close(compute_critic_free_advantages(name, R), expected)
    torch.testing.assert_close(get_advantage_estimator(name)(R), expected)
    flat = compute_critic_free_advantages(name, R.reshape(-1), n_samples=3)
    torch.testing.assert_close(flat, expected.reshape(-1))


def test_registry_is_complete():
    assert set(ADVANTAGE_ESTIMATORS) == set(EXPECTED)


def test_group_norm_options_and_constant_group():
    biased = compute_critic_free_advantages("group_norm", R, unbiased=False, eps=0.0)
    s0 = math.sqrt(2 / 3)  # row 0 population std: sqrt((1 + 0 + 1) / 3)
    s1 = math.sqrt(8.0)  # row 1 population std: sqrt((4 + 4 + 16) / 3)
    assert biased[0].tolist() == pytest.approx([-1 / s0, 0.0, 1 / s0])
    assert biased[1].tolist() == pytest.approx([-2 / s1, -2 / s1, 4 / s1])
    same = compute_critic_free_advantages("group_norm", torch.full((1, 4), 0.7))
    assert same.abs().max().item() == 0.0
    single = compute_critic_free_advantages("group_norm", torch.tensor([[3.0]]), unbiased=False)
    assert single.tolist() == [[0.0]]


def test_errors():
    with pytest.raises(ValueError, match=r"K >= 2.*K=1"):
        compute_critic_free_advantages("rloo", torch.ones(4, 1))
    with pytest.raises(ValueError, match="K >= 2"):
        compute_critic_free_advantages("group_norm", torch.ones(4, 1))
    with pytest.raises(
        ValueError, match=r"'grpo'.*'group_norm', 'mean_baseline', 'reinforce', 'rloo'"
    ):
        compute_critic_free_advantages("grpo", R)
    with pytest.raises(ValueError, match="n_samples"):
        compute_critic_free_advantages("rloo", torch.ones(5), n_samples=2)
    with pytest.raises(ValueError, match="n_samples"):
        compute_critic_free_advantages("rloo", torch.ones(5))
    with pytest.raises(ValueError, match="n_samples"):
        compute_critic_free_advantages("rloo", R, n_samples=2)


def test_bf16_and_detached():
    # bf16 rewards in [0, 6] are exact here; result float32 within 1e-6 of the float answer.
    r = R.clone().requires_grad_(True)
    out = compute_critic_free_advantages("rloo", r.bfloat16())
    assert out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out, torch.tensor(EXPECTED["rloo"]))


def test_expand_to_tokens():
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert expand_to_tokens(adv, mask).tolist() == [[2.0, 2.0, 0.0], [0.0, -1.0, -1.0]]
    with pytest.raises(ValueError, match=r"\(B,\)"):
        expand_to_tokens(torch.ones(3), mask)

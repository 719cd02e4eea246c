"""GAE and discounted returns: explicit hand numbers and an independent sum-formula reference."""

import pytest
import torch

from rlhf_dist.algo import discounted_returns, gae

GAMMA, LAM = 0.9, 0.95
# 3-step episode, rewards (0, 0, 1), values (0.5, 0.6, 0.7), gamma*lam = 0.855:
#   delta2 = 1 + 0.9*0   - 0.7 = 0.3    A2 = 0.3
#   delta1 = 0 + 0.9*0.7 - 0.6 = 0.03   A1 = 0.03 + 0.855*0.3    = 0.2865
#   delta0 = 0 + 0.9*0.6 - 0.5 = 0.04   A0 = 0.04 + 0.855*0.2865 = 0.2849575
#   returns = A + V = 0.7849575, 0.8865, 1.0
ADV = [0.2849575, 0.2865, 0.3]
RET = [0.7849575, 0.8865, 1.0]


def test_hand_example_all_mask():
    adv, ret = gae(
        torch.tensor([[0.0, 0.0, 1.0]]),
        torch.tensor([[0.5, 0.6, 0.7]]),
        torch.ones(1, 3),
        GAMMA,
        LAM,
    )
    assert adv[0].tolist() == pytest.approx(ADV, abs=1e-6)
    assert ret[0].tolist() == pytest.approx(RET, abs=1e-6)


def test_hand_example_with_left_right_padding_and_gap():
    # The same 3-step episode placed at different slots of T=4; junk (reward 5, value 99) in
    # the masked slot must be ignored, and the value after the last step is 0 (not 99).
    rewards = torch.tensor([[5.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 5.0], [0.0, 5.0, 0.0, 1.0]])
    values = torch.tensor([[99.0, 0.5, 0.6, 0.7], [0.5, 0.6, 0.7, 99.0], [0.5, 99.0, 0.6, 0.7]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0], [1, 0, 1, 1]])
    adv, ret = gae(rewards, values, mask, GAMMA, LAM)
    assert adv.tolist()[0] == pytest.approx([0.0] + ADV, abs=1e-6)
    assert adv.tolist()[1] == pytest.approx(ADV + [0.0], abs=1e-6)
    assert adv.tolist()[2] == pytest.approx([ADV[0], 0.0, ADV[1], ADV[2]], abs=1e-6)
    assert ret.tolist()[0] == pytest.approx([0.0] + RET, abs=1e-6)
    assert ret.tolist()[2] == pytest.approx([RET[0], 0.0, RET[1], RET[2]], abs=1e-6)


def _reference(rewards, values, mask, gamma, lam):
    """Direct sum A_t = sum_l (gamma lam)^l delta_{t+l} over the compressed unmasked steps."""
    adv = [[0.0] * len(r) for r in rewards]
    ret = [[0.0] * len(r) for r in rewards]
    for b, (r_row, v_row, m_row) in enumerate(zip(rewards, values, mask)):
        idx = [t for t, m in enumerate(m_row) if m]
        r = [r_row[t] for t in idx]
        v = [v_row[t] for t in idx] + [0.0]
        deltas = [r[i] + gamma * v[i + 1] - v[i] for i in range(len(idx))]
        for i, t in enumerate(idx):
            a = sum((gamma * lam) ** k * deltas[i + k] for k in range(len(idx) - i))
            adv[b][t] = a
            ret[b][t] = a + v[i]
    return adv, ret


def test_random_ragged_against_direct_sum():
    torch.manual_seed(0)
    rewards, values = torch.randn(5, 9), torch.randn(5, 9)
    mask = torch.rand(5, 9) > 0.35
    mask[0] = False
    mask[0, 3:6] = True  # a left- and right-padded row
    adv, ret = gae(rewards, values, mask, 0.99, 0.9)
    ref_adv, ref_ret = _reference(rewards.tolist(), values.tolist(), mask.tolist(), 0.99, 0.9)
    torch.testing.assert_close(adv, torch.tensor(ref_adv), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ret, torch.tensor(ref_ret), atol=1e-5, rtol=1e-5)


def test_bf16_inputs_float32_outputs_detached():
    # bf16 rounding of O(1) inputs is <= 2**-8 relative; accumulated over 6 steps atol 2e-2.
    torch.manual_seed(1)
    rewards, values = torch.randn(3, 6), torch.randn(3, 6, requires_grad=True)
    mask = torch.ones(3, 6)
    adv, ret = gae(rewards.bfloat16(), values.bfloat16(), mask, GAMMA, LAM)
    assert adv.dtype == ret.dtype == torch.float32
    assert not adv.requires_grad and not ret.requires_grad
    ref_adv, _ = _reference(rewards.tolist(), values.tolist(), mask.tolist(), GAMMA, LAM)
    torch.testing.assert_close(adv, torch.tensor(ref_adv), atol=2e-2, rtol=0)


def test_discounted_returns_by_hand():
    # rewards 1, 0, 2 with gamma 0.5: G2 = 2, G1 = 0 + 0.5*2 = 1, G0 = 1 + 0.5*1 = 1.5
    rewards = torch.tensor([[1.0, 0.0, 2.0, 7.0], [7.0, 1.0, 0.0, 2.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    out = discounted_returns(rewards, mask, 0.5)
    assert out.tolist() == [[1.5, 1.0, 2.0, 0.0], [0.0, 1.5, 1.0, 2.0]]


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), GAMMA, LAM)

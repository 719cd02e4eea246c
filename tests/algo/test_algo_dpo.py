"""DPO loss variants against hand numbers."""

import math

import pytest
import torch

from rlhf_dist.algo import DPO_LOSSES, dpo_loss

# Pair 0: chosen logratio -1 - (-1.5) = 0.5, rejected logratio -2 - (-1) = -1 -> h = 1.5
# Pair 1: chosen logratio 10, rejected logratio -10 -> h = 20
PC = torch.tensor([-1.0, 0.0])
PR = torch.tensor([-2.0, -20.0])
RC = torch.tensor([-1.5, -10.0])
RR = torch.tensor([-1.0, -10.0])
BETA = 0.1


def softplus(x):
    return math.log1p(math.exp(x))


EXPECTED = {
    "sigmoid": [softplus(-0.15), softplus(-2.0)],  # -log sigmoid(beta h) = log(1 + e^{-beta h})
    "ipo": [(1.5 - 5.0) ** 2, (20 - 5.0) ** 2],  # (h - 1/(2 beta))^2
    "hinge": [0.85, 0.0],  # relu(1 - beta h)
}


@pytest.mark.parametrize("loss_type", sorted(EXPECTED))
def test_losses_and_rewards_by_hand(loss_type):
    losses, chosen_r, rejected_r = dpo_loss(PC, PR, RC, RR, BETA, loss_type=loss_type)
    assert losses.tolist() == pytest.approx(EXPECTED[loss_type], rel=1e-5)
    assert chosen_r.tolist() == pytest.approx([0.05, 1.0])
    assert rejected_r.tolist() == pytest.approx([-0.1, -1.0])


def test_registry_complete_and_unknown_name():
    assert set(DPO_LOSSES) == set(EXPECTED)
    with pytest.raises(ValueError, match=r"'kto'.*'hinge', 'ipo', 'sigmoid'"):
        dpo_loss(PC, PR, RC, RR, BETA, loss_type="kto")


def test_cdpo_label_smoothing():
    losses, _, _ = dpo_loss(PC, PR, RC, RR, BETA, label_smoothing=0.1)
    expected = 0.9 * softplus(-0.15) + 0.1 * softplus(0.15)
    assert losses[0].item() == pytest.approx(expected, rel=1e-6)


def test_gradients_and_detached_rewards():
    pc = PC.clone().requires_grad_(True)
    losses, chosen_r, rejected_r = dpo_loss(pc, PR, RC, RR, BETA)
    assert not chosen_r.requires_grad and not rejected_r.requires_grad
    losses[0].backward()
    # d/dpc softplus(-beta h) = -beta * sigmoid(-beta h)
    assert pc.grad[0].item() == pytest.approx(-BETA / (1 + math.exp(0.15)), rel=1e-5)
    assert pc.grad[1].item() == 0.0


def test_bf16_and_stability():
    # Inputs exact in bf16 (small integers / halves): float32 results equal to 1e-5; large h finite.
    losses, _, _ = dpo_loss(PC.bfloat16(), PR.bfloat16(), RC.bfloat16(), RR.bfloat16(), BETA)
    assert losses.dtype == torch.float32
    assert losses.tolist() == pytest.approx(EXPECTED["sigmoid"], rel=1e-5)
    big, _, _ = dpo_loss(
        torch.tensor([-5000.0]), torch.tensor([0.0]), torch.zeros(1), torch.zeros(1), 1.0
    )
    assert big.item() == pytest.approx(5000.0)


def test_validation():
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(PC, PR, RC, RR, 0.0)
    for ls in (0.5, -0.1):
        with pytest.raises(ValueError, match="label_smoothing"):
            dpo_loss(PC, PR, RC, RR, BETA, label_smoothing=ls)
    with pytest.raises(ValueError, match="only defined"):
        dpo_loss(PC, PR, RC, RR, BETA, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(PC, PR[:1], RC, RR, BETA)

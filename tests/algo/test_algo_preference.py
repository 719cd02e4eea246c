"""SimPO, ORPO and KTO against values computed by hand (float64), their gradients for one case
each, KTO's class weights (eq. 9), online DPO's best/worst pairs, and the errors that name a bad
argument."""

import math

import pytest
import torch

from rlhf_dist.algo import (
    best_worst_pairs,
    kto_class_weights,
    kto_loss,
    kto_weight_ratio,
    online_pair_weights,
    orpo_loss,
    simpo_loss,
)


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def _log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_simpo_by_hand():
    c, r = _t(-0.5, -1.0), _t(-1.5, -0.8)
    losses, rc, rr = simpo_loss(c, r, beta=2.0, gamma=0.5)
    # pair 0: 2 (−0.5 + 1.5) − 0.5 = 1.5;  pair 1: 2 (−1.0 + 0.8) − 0.5 = −0.9
    assert losses.tolist() == pytest.approx([-_log_sigmoid(1.5), -_log_sigmoid(-0.9)], abs=1e-12)
    assert rc.tolist() == [-1.0, -2.0] and rr.tolist() == [-3.0, -1.6]
    assert losses.dtype == torch.float64


def test_simpo_gradient_by_hand():
    c, r = _t(-0.5).requires_grad_(), _t(-1.5).requires_grad_()
    simpo_loss(c, r, beta=2.0, gamma=0.5)[0].sum().backward()
    # d/dc −log σ(z) = −(1 − σ(z)) β with z = 1.5
    assert c.grad.item() == pytest.approx(-(1 - _sigmoid(1.5)) * 2.0, abs=1e-12)
    assert r.grad.item() == pytest.approx((1 - _sigmoid(1.5)) * 2.0, abs=1e-12)


def test_orpo_by_hand():
    c, r = _t(-0.2, -1.0), _t(-0.9, -0.3)
    losses, rc, rr = orpo_loss(c, r, beta=0.1)
    for i, (ci, ri) in enumerate(zip(c.tolist(), r.tolist())):
        odds_c = math.exp(ci) / (1 - math.exp(ci))
        odds_r = math.exp(ri) / (1 - math.exp(ri))
        log_odds = math.log(odds_c / odds_r)
        assert losses[i].item() == pytest.approx(-0.1 * _log_sigmoid(log_odds), abs=1e-12)
    assert rc.tolist() == pytest.approx([-0.02, -0.1]) and rr.tolist() == pytest.approx(
        [-0.09, -0.03]
    )


def test_orpo_gradient_and_a_certain_answer_stays_finite():
    c, r = _t(-0.2).requires_grad_(), _t(-0.9)
    orpo_loss(c, r, beta=0.1)[0].backward()
    log_odds = (-0.2 + 0.9) - (math.log(1 - math.exp(-0.2)) - math.log(1 - math.exp(-0.9)))
    # d log_odds / dc = 1 + e^c / (1 − e^c);  d loss / d log_odds = −β (1 − σ(log_odds))
    expected = -0.1 * (1 - _sigmoid(log_odds)) * (1 + math.exp(-0.2) / (1 - math.exp(-0.2)))
    assert c.grad.item() == pytest.approx(expected, abs=1e-12)
    # a mean log-prob of 0 (a certain answer) is taken as -1e-6: finite loss, no error
    losses, _, _ = orpo_loss(_t(0.0, -0.5), _t(-1.0, 0.0), beta=0.1)
    assert torch.isfinite(losses).all()
    assert losses[0].item() == pytest.approx(orpo_loss(_t(-1e-6), _t(-1.0), 0.1)[0].item())


def test_kto_by_hand():
    policy, ref = _t(-3.0, -5.0, -2.0), _t(-4.0, -4.5, -2.0)
    desirable = torch.tensor([True, False, True])
    losses, rewards = kto_loss(
        policy, ref, desirable, kl=0.25, beta=0.5, desirable_weight=1.0, undesirable_weight=1.5
    )
    h = [1.0, -0.5, 0.0]
    assert losses.tolist() == pytest.approx(
        [
            1 - _sigmoid(0.5 * (h[0] - 0.25)),
            1.5 * (1 - _sigmoid(0.5 * (0.25 - h[1]))),
            1 - _sigmoid(0.5 * (h[2] - 0.25)),
        ],
        abs=1e-12,
    )
    assert rewards.tolist() == [0.5, -0.25, 0.0]
    # a negative KL estimate is clamped at 0 (the reference point z0)
    clamped, _ = kto_loss(policy, ref, desirable, kl=-3.0, beta=0.5)
    assert clamped[0].item() == pytest.approx(1 - _sigmoid(0.5), abs=1e-12)


def test_kto_gradient_flows_to_the_policy_only():
    policy, ref = _t(-3.0).requires_grad_(), _t(-4.0).requires_grad_()
    kl = _t(0.25).requires_grad_()
    kto_loss(policy, ref, torch.tensor([True]), kl=kl, beta=0.5)[0].sum().backward()
    s = _sigmoid(0.5 * (1.0 - 0.25))
    assert policy.grad.item() == pytest.approx(-0.5 * s * (1 - s), abs=1e-12)
    assert ref.grad is None and kl.grad is None  # the reference and z0 are constants


def test_kto_per_row_weights_are_the_class_weights():
    policy, ref = _t(-3.0, -5.0, -2.0), _t(-4.0, -4.5, -2.0)
    desirable = torch.tensor([True, False, True])
    by_class, _ = kto_loss(policy, ref, desirable, 0.25, 0.5, 2.0, 1.5)
    per_row, _ = kto_loss(policy, ref, desirable, 0.25, 0.5, _t(2.0, 1.5, 2.0), _t(2.0, 1.5, 2.0))
    assert per_row.tolist() == by_class.tolist()
    assert by_class[0].item() == pytest.approx(2.0 * (1 - _sigmoid(0.5 * 0.75)), abs=1e-12)


def test_kto_class_weights_balance_eq_9():
    # 30 desirable, 90 undesirable rows: lambda_D n_D / (lambda_U n_U) = 30 / 90 as given
    assert kto_class_weights(30, 90, 1.0, 1.0) == (1.0, 1.0)
    assert kto_weight_ratio(30, 90, 1.0, 1.0) == pytest.approx(1 / 3)
    # balance r = 1.2: lambda_D = 1.2 * 0.5 * 90 / 30 = 1.8, lambda_U kept
    w_d, w_u = kto_class_weights(30, 90, 1.0, 0.5, balance=1.2)
    assert (w_d, w_u) == (pytest.approx(1.8), 0.5)
    assert kto_weight_ratio(30, 90, w_d, w_u) == pytest.approx(1.2)
    assert kto_weight_ratio(5, 0, 1.0, 1.0) == float("inf")
    with pytest.raises(ValueError, match="needs desirable and undesirable rows, got 4 and 0"):
        kto_class_weights(4, 0, 1.0, 1.0, balance=1.0)


def test_best_worst_pairs_by_hand():
    # 3 prompts x 3 answers: a clear best/worst, a tie among the best, all equal
    scores = _t(0.5, 2.0, -1.0, 1.0, 1.0, 0.0, 0.3, 0.3, 0.3)
    chosen, rejected, decisive = best_worst_pairs(scores, 3)
    assert chosen.tolist() == [1, 3, 6]  # the first of equal bests
    assert rejected.tolist() == [2, 5, 6]
    assert decisive.tolist() == [True, True, False]  # the third prompt is a tie
    with pytest.raises(ValueError, match="n must be >= 2"):
        best_worst_pairs(scores, 1)
    with pytest.raises(ValueError, match=r"scores must be \(P \* n,\) with n=2, got \(9,\)"):
        best_worst_pairs(scores, 2)


def test_online_pair_weights_by_hand():
    # 8 pairs in steps of 4: step 1 has 3 decisive pairs (4/3 each), step 2 none (all 0)
    decisive = torch.tensor([True, False, True, True, False, False, False, False])
    weights = online_pair_weights(decisive, 4)
    assert weights.tolist() == pytest.approx([4 / 3, 0, 4 / 3, 4 / 3, 0, 0, 0, 0])
    # a step's mean of weighted losses is the mean over its decisive pairs
    losses = torch.tensor([1.0, 9.0, 2.0, 3.0])
    assert float((losses * weights[:4]).mean()) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="a multiple of step_size=3"):
        online_pair_weights(decisive, 3)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: simpo_loss(_t(-1.0), _t(-1.0), beta=0.0, gamma=0.0), "beta must be > 0"),
        (lambda: simpo_loss(_t(-1.0), _t(-1.0), beta=1.0, gamma=-1.0), "gamma must be >= 0"),
        (lambda: simpo_loss(_t(-1.0, -2.0), _t(-1.0), beta=1.0, gamma=0.0), "shape mismatch"),
        (
            lambda: kto_loss(_t(-1.0), _t(-1.0), torch.tensor([True]), 0.0, 1.0, -1.0),
            "desirable_weight and undesirable_weight must be >= 0",
        ),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bf16_inputs_compute_in_float32():
    c, r = _t(-0.5).bfloat16(), _t(-1.5).bfloat16()
    assert simpo_loss(c, r, 1.0, 0.0)[0].dtype == torch.float32

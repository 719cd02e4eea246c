"""KTO's objective: the loss, KL estimate and metrics of hand-built log-probs computed by hand;
on a tiny model every pair layout gives the padded one's loss and gradient; and weighted
pairs (online DPO's) drop a pair of weight 0 exactly."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_dist.config import DataConfig, DPOConfig, ModelConfig, TinyModelConfig
from rlhf_dist.data import (
    PAIR_COLLATORS,
    UnpairedCollator,
    build_preference_dataset,
    build_unpaired_dataset,
)
from rlhf_dist.objectives import (
    PAIR_LAYOUTS,
    PairLogps,
    dpo_batch_loss,
    kto_objective,
    reference_rows,
)


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def _logps(own, mismatched):
    """PairLogps of token log-prob rows, a nan marking an unscored column (mask 0)."""
    own, mismatched = _t(own), _t(mismatched)
    return PairLogps(
        own.nan_to_num(0.0), ~own.isnan(), mismatched.nan_to_num(0.0), ~mismatched.isnan()
    )


def test_kto_objective_by_hand():
    nan = float("nan")
    policy = _logps([[-1.0, -0.5], [-2.0, nan]], [[-3.0, nan], [-1.0, -1.0]])
    # own sums [-1.5, -2.0]; mismatched sums [-3.0, -2.0]
    ref_own, ref_mismatched = _t([-2.0, -1.0]), _t([-3.5, -2.0])
    desirable, weights = torch.tensor([True, False]), _t([1.5, 0.5])
    loss, metrics = kto_objective(policy, ref_own, ref_mismatched, desirable, weights, beta=0.5)
    # z0 = mean(-3.0 + 3.5, -2.0 + 2.0) = 0.25; h = (0.5, -1.0); beta h = (0.25, -0.5)
    expected = (
        1.5 * (1 - _sigmoid(0.5 * (0.5 - 0.25))) + 0.5 * (1 - _sigmoid(0.5 * (0.25 + 1.0)))
    ) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert metrics == pytest.approx(
        {
            "kto_loss": expected,
            "loss": expected,
            "kl": 0.25,
            "reward_accuracy": 1.0,  # 0.25 above beta z0 = 0.125 (desirable), -0.5 below
            "kto_margin": (0.125 + 0.625) / 2,
            "desirable_frac": 0.5,
            "completion_logp": -1.75,
        }
    )
    # the reference point is clamped at 0: a policy below the reference on the mismatched pairs
    _, low = kto_objective(policy, ref_own, _t([0.0, 0.0]), desirable, weights, beta=0.5)
    assert low["kl"] == 0.0 and low["kto_margin"] == pytest.approx((0.25 + 0.5) / 2)


def test_kto_gradient_reaches_the_own_answers_only():
    own = torch.tensor([[-1.0, -0.5]], dtype=torch.float64, requires_grad=True)
    mismatched = torch.tensor([[-3.0, -1.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, _ = kto_objective(
        PairLogps(own, mask, mismatched, mask),
        _t([-2.0]),
        _t([-4.5]),
        torch.tensor([True]),
        _t([1.0]),
        beta=0.5,
    )
    loss.backward()
    s = _sigmoid(0.5 * (0.5 - 0.5))  # h = 0.5, z0 = -4.0 + 4.5 = 0.5
    assert own.grad[0].tolist() == pytest.approx([-0.5 * s * (1 - s)] * 2, abs=1e-12)
    assert mismatched.grad is None or not mismatched.grad.any()  # z0 is a constant


@pytest.fixture(scope="module")
def tokenizer():
    from rlhf_dist.toy import toy_tokenizer

    return toy_tokenizer()


def _model(tokenizer):
    from rlhf_dist.models import load_causal_lm

    torch.manual_seed(0)
    return load_causal_lm(
        ModelConfig(
            attn_implementation="sdpa",
            tiny=TinyModelConfig(
                arch="llama", hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128
            ),
        ),
        tokenizer,
    )


def test_kto_is_the_same_in_every_layout(tokenizer):
    model = _model(tokenizer)
    rows = build_unpaired_dataset(DataConfig(max_length=64, max_prompt_length=32), tokenizer)
    examples = [rows[i] for i in range(5)]
    assert {e["desirable"] for e in examples} == {True, False}
    results = {}
    for name, layout in PAIR_LAYOUTS.items():
        dpo = DPOConfig(loss_type="kto", layout=name)
        batch = UnpairedCollator(
            PAIR_COLLATORS[name](tokenizer.pad_token_id), tokenizer.eos_token_id, 64, (1.3, 0.7)
        )(examples)
        with torch.no_grad():  # a reference apart from the policy
            own, mismatched = layout.logps(model, batch).sequences()
        ref = layout.rows(own - 0.3, mismatched - 0.1)
        model.zero_grad()
        loss, metrics = dpo_batch_loss(model, batch, ref, dpo)
        loss.backward()
        results[name] = (metrics, model.model.embed_tokens.weight.grad.clone())
    padded = results.pop("padded")
    assert padded[0]["kl"] == pytest.approx(0.1, abs=1e-5)  # policy - reference on mismatched
    for metrics, grad in results.values():
        assert metrics == pytest.approx(padded[0], abs=1e-4)
        torch.testing.assert_close(grad, padded[1], atol=1e-5, rtol=1e-4)


def test_a_pair_of_weight_zero_changes_nothing(tokenizer):
    """Online DPO's tie: weights (B/K for the K decisive pairs, 0 for a tie) give the loss,
    metrics and gradient of the decisive pairs alone."""
    model = _model(tokenizer)
    pairs = build_preference_dataset(DataConfig(max_length=64, max_prompt_length=32), tokenizer)
    dpo = DPOConfig(layout="padded", loss_type="sigmoid", nll_coef=0.5)
    layout, collate = PAIR_LAYOUTS["padded"], PAIR_COLLATORS["padded"](tokenizer.pad_token_id)
    runs = []
    for examples, weights in (
        ([pairs[0], pairs[1], pairs[2]], [1.5, 0.0, 1.5]),
        ([pairs[0], pairs[2]], None),
    ):
        batch = collate(examples)
        if weights is not None:
            w = torch.tensor(weights)
            batch["pair_weight"] = layout.rows(w, w)
        with torch.no_grad():
            ref = reference_rows(model, batch, dpo) - 0.2
        model.zero_grad()
        loss, metrics = dpo_batch_loss(model, batch, ref, dpo)
        loss.backward()
        runs.append((metrics, model.model.embed_tokens.weight.grad.clone()))
    (weighted, grad_w), (alone, grad_a) = runs
    for key in ("dpo_loss", "reward_accuracy", "reward_margin", "chosen_logp"):
        assert weighted[key] == pytest.approx(alone[key], rel=1e-6, abs=1e-5), key
    torch.testing.assert_close(grad_w, grad_a, atol=2e-5, rtol=1e-3)

"""RewardShaper: hand-computed token rewards, reward clipping, the KL controller."""

import math

import pytest
import torch

from rlhf_dist.config import PPOConfig
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout import RewardShaper


def ragged():
    """Row 0 acts at t=1,2 (k1 KL 0.5, -1.0); row 1 at t=1,2,3 (k1 KL 0, 0.5, -1.0)."""
    return Batch(
        {
            "scores": torch.tensor([1.0, -2.0]),
            "old_logprobs": torch.tensor([[0.0, -1.0, -2.0, 0.0], [0.0, -0.5, -0.5, -2.0]]),
            "ref_logprobs": torch.tensor([[0.0, -1.5, -1.0, 0.0], [0.0, -0.5, -1.0, -1.0]]),
            "action_mask": torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]]),
        }
    )


def test_token_rewards_by_hand():
    shaper = RewardShaper(PPOConfig(kl_coef=0.1, kl_estimator="k1"))
    out, metrics = shaper(ragged())
    # r_t = -0.1 * KL_t, plus the score on the last action
    expected = torch.tensor([[0.0, -0.05, 0.1 + 1.0, 0.0], [0.0, 0.0, -0.05, 0.1 - 2.0]])
    assert torch.allclose(out["token_rewards"], expected, atol=1e-7)
    assert torch.equal(out["scores"], ragged()["scores"])  # inputs kept
    assert metrics == pytest.approx(
        {
            "reward/score_mean": -0.5,
            "reward/score_std": 1.5,
            "kl/ref_kl": -0.5,  # sequence KLs 0.5 - 1.0 and 0 + 0.5 - 1.0
            "kl/coef": 0.1,
            "response/length_mean": 2.5,
        }
    )


def test_k3_estimator_and_reward_clip():
    shaper = RewardShaper(PPOConfig(kl_coef=0.1, kl_estimator="k3", reward_clip=1.5))
    out, metrics = shaper(ragged())
    k3 = lambda old, ref: math.exp(ref - old) - (ref - old) - 1  # noqa: E731
    r = out["token_rewards"]
    assert r[0, 1].item() == pytest.approx(-0.1 * k3(-1.0, -1.5))
    assert r[0, 2].item() == pytest.approx(-0.1 * k3(-2.0, -1.0) + 1.0)
    assert r[1, 3].item() == pytest.approx(-0.1 * k3(-2.0, -1.0) - 1.5)  # -2 clipped to -1.5
    assert metrics["reward/score_mean"] == pytest.approx(-0.25)
    assert metrics["reward/clip_frac"] == 0.5
    assert metrics["kl/ref_kl"] == pytest.approx(-0.5)  # always the k1 sequence KL


def test_adaptive_controller_follows_ppo_formula_and_round_trips():
    ppo = PPOConfig(kl_coef=0.1, kl_controller="adaptive", kl_target=6.0, kl_horizon=100)
    shaper = RewardShaper(ppo)
    shaper.update_kl(9.0, n_steps=10)  # e = clip(9/6 - 1, ±0.2) = 0.2
    assert shaper.kl_coef == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    shaper.update_kl(5.4, n_steps=10)  # e = -0.1
    assert shaper.kl_coef == pytest.approx(0.102 * (1 - 0.1 * 10 / 100))
    _, metrics = shaper(ragged())
    assert metrics["kl/coef"] == pytest.approx(0.10098)
    fresh = RewardShaper(ppo)
    fresh.load_state_dict(shaper.state_dict())
    assert fresh.kl_coef == shaper.kl_coef
    fixed = RewardShaper(PPOConfig(kl_coef=0.1))
    fixed.update_kl(100.0, n_steps=1000)
    assert fixed.kl_coef == 0.1


def test_missing_key_named():
    with pytest.raises(KeyError, match=r"lacks key\(s\) \['ref_logprobs'\]"):
        RewardShaper(PPOConfig())(ragged().drop(["ref_logprobs"]))

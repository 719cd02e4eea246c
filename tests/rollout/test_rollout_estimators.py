"""compute_advantages: GAE (vs algo.gae and by hand), critic-free by hand, whitening."""

import math

import pytest
import torch

from rlhf_dist.algo import gae, masked_mean, masked_var, masked_whiten
from rlhf_dist.config import PPOConfig
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout import compute_advantages


def random_batch(N=6, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([3, 5, 1, 4, 6, 2])[:N]
    cols = torch.arange(T)[None]
    mask = ((cols >= 1) & (cols < 1 + lengths[:, None])).long()
    return Batch(
        {
            "token_rewards": torch.randn(N, T, generator=g) * mask,
            "values": torch.randn(N, T, generator=g) * mask,
            "action_mask": mask,
        }
    )


def test_gae_path_equals_algo_gae():
    b = random_batch()
    ppo = PPOConfig(gamma=0.9, lam=0.8, whiten_advantages=False)
    out, metrics = compute_advantages(b, ppo, n_samples=1)
    adv, ret = gae(b["token_rewards"], b["values"], b["action_mask"], 0.9, 0.8)
    assert torch.equal(out["advantages"], adv) and torch.equal(out["returns"], ret)
    assert metrics["returns/mean"] == pytest.approx(masked_mean(ret, b["action_mask"]).item())


def test_gae_by_hand():
    b = Batch(
        {
            "token_rewards": torch.tensor([[0.0, 0.5, 1.0]]),
            "values": torch.tensor([[0.0, 0.2, 0.4]]),
            "action_mask": torch.tensor([[0, 1, 1]]),
        }
    )
    out, _ = compute_advantages(b, PPOConfig(gamma=0.9, lam=0.5, whiten_advantages=False), 1)
    # t=2: δ = 1.0 + 0 - 0.4 = 0.6 = A_2;  t=1: δ = 0.5 + 0.9·0.4 - 0.2 = 0.66,
    # A_1 = 0.66 + 0.9·0.5·0.6 = 0.93;  returns = A + V
    assert torch.allclose(out["advantages"], torch.tensor([[0.0, 0.93, 0.6]]))
    assert torch.allclose(out["returns"], torch.tensor([[0.0, 1.13, 1.0]]))


def two_prompts_two_samples():
    """Sequence rewards (sum over actions) 1, 3 (prompt 0) and 2, 2 (prompt 1)."""
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 1], [0, 1, 1, 0]])
    rewards = torch.tensor(
        [[0.0, 0.25, 0.75, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 1.0, 0.5, 0.5], [0.0, -1.0, 3.0, 0.0]]
    )
    return Batch({"token_rewards": rewards, "action_mask": mask})


def test_group_norm_by_hand_and_not_whitened():
    b = two_prompts_two_samples()
    out, metrics = compute_advantages(
        b, PPOConfig(advantage_estimator="group_norm", whiten_advantages=True), n_samples=2
    )
    # prompt 0: mean 2, unbiased std sqrt(2): ∓1/(sqrt(2)+1e-6); prompt 1: equal rewards -> 0
    a = 1.0 / (math.sqrt(2.0) + 1e-6)
    expected = torch.tensor(
        [[0.0, -a, -a, 0.0], [0.0, a, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    assert torch.allclose(out["advantages"], expected, atol=1e-6)
    assert torch.equal(out["returns"], out["advantages"])
    assert metrics["adv/mean"] == pytest.approx(-a / 8, abs=1e-6)  # 2 of 8 actions -a, 1 +a


def test_rloo_and_mean_baseline_by_hand():
    b = two_prompts_two_samples()
    rloo, _ = compute_advantages(
        b, PPOConfig(advantage_estimator="rloo", whiten_advantages=False), n_samples=2
    )
    assert torch.allclose(rloo["advantages"][:, 1], torch.tensor([-2.0, 2.0, 0.0, 0.0]))
    assert torch.allclose(rloo["advantages"][0], torch.tensor([0.0, -2.0, -2.0, 0.0]))
    mb, _ = compute_advantages(
        b, PPOConfig(advantage_estimator="mean_baseline", whiten_advantages=False), 2
    )
    assert torch.allclose(mb["advantages"][:, 1], torch.tensor([-1.0, 1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="n_samples"):
        compute_advantages(b, PPOConfig(advantage_estimator="rloo"), n_samples=3)


def test_whitening():
    b = random_batch()
    mask = b["action_mask"]
    out, metrics = compute_advantages(b, PPOConfig(gamma=0.9, lam=0.8), 1)
    raw, _ = gae(b["token_rewards"], b["values"], mask, 0.9, 0.8)
    assert torch.allclose(out["advantages"], masked_whiten(raw, mask))
    assert metrics["adv/mean"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["adv/std"] == pytest.approx(
        math.sqrt(masked_var(masked_whiten(raw, mask), mask, unbiased=False).item())
    )
    assert (out["advantages"][mask == 0] == 0).all()
    rf, _ = compute_advantages(b, PPOConfig(advantage_estimator="reinforce"), 1)
    seq = (b["token_rewards"] * mask).sum(-1)
    assert torch.allclose(rf["advantages"], masked_whiten(seq[:, None] * mask, mask), atol=1e-6)
    assert torch.allclose(rf["returns"], seq[:, None] * mask)  # returns are not whitened


def test_gae_needs_values():
    with pytest.raises(KeyError, match=r"'gae' needs batch key\(s\) \['values'\]"):
        compute_advantages(random_batch().drop(["values"]), PPOConfig(), 1)


def test_reinforce_pp_by_hand_returns_to_go_then_batch_whitened():
    """REINFORCE++: each token's return-to-go of the per-token rewards (the KL penalty stays
    where it was paid), normalised over the whole batch's actions -- always, whatever
    ``whiten_advantages`` says; returns are the raw returns-to-go."""
    b = two_prompts_two_samples()
    out, _ = compute_advantages(
        b, PPOConfig(advantage_estimator="reinforce_pp", whiten_advantages=False), n_samples=2
    )
    returns = torch.tensor(
        [[0.0, 1.0, 0.75, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.5], [0.0, 2.0, 3.0, 0.0]]
    )
    assert torch.allclose(out["returns"], returns)
    mask = b["action_mask"].bool()
    flat = returns[mask]  # 1, .75, 3, 2, 1, .5, 2, 3: mean 1.65625
    whitened = (flat - flat.mean()) / (flat.var() + 1e-8).sqrt()
    assert torch.allclose(out["advantages"][mask], whitened, atol=1e-5)
    assert (out["advantages"][~mask] == 0).all()
    discounted, _ = compute_advantages(
        b, PPOConfig(advantage_estimator="reinforce_pp", gamma=0.5), n_samples=2
    )
    assert torch.allclose(discounted["returns"][2], torch.tensor([0.0, 1.375, 0.75, 0.5]))


def test_dr_grpo_by_hand_group_centred_and_never_whitened():
    """Dr. GRPO: r - group mean, no std, no batch whitening even with whiten_advantages."""
    b = two_prompts_two_samples()
    out, _ = compute_advantages(
        b, PPOConfig(advantage_estimator="dr_grpo", whiten_advantages=True), n_samples=2
    )
    # prompt 0: rewards 1, 3 -> -1, +1; prompt 1: 2, 2 -> 0, 0 (GRPO: -1/sqrt 2, +1/sqrt 2)
    expected = torch.tensor(
        [[0.0, -1.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    assert torch.allclose(out["advantages"], expected)


def test_the_estimator_names_have_one_source():
    """ppo.advantage_estimator's valid names (algo) are exactly the estimators rollout runs;
    every critic-free one has its fewest samples per prompt registered next to it."""
    from rlhf_dist.algo.advantages import ADVANTAGE_ESTIMATORS, ADVANTAGE_NAMES, MIN_GROUP_SIZE
    from rlhf_dist.rollout.estimators import ADVANTAGE_FNS

    assert sorted(ADVANTAGE_FNS) == list(ADVANTAGE_NAMES)
    assert set(MIN_GROUP_SIZE) == set(ADVANTAGE_ESTIMATORS)

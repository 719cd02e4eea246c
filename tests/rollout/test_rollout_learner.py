"""The PPO learners' objectives (rlhf_dist.objectives.ppo): numbers by hand on experience
whose answers are known."""

import pytest
import torch

from rlhf_dist.config import PPOConfig
from rlhf_dist.protocol import Batch
from rlhf_dist.objectives import policy_objective, value_objective
from rlhf_dist.models import action_logprobs
from rlhf_dist.rollout import HFGenerator


def test_policy_objective_on_the_behaviour_policy(make_lm, tok, rollout_cfg, prompts, left_pad):
    """Old log-probs = current ones: ratio 1, no clipping, loss = −mean(A) − c·entropy."""
    model = make_lm()
    ids, mask = left_pad(prompts)
    experience = HFGenerator(model, tok, rollout_cfg(max_new_tokens=4)).generate(
        ids, mask, generator_seed=0
    )
    with torch.no_grad():
        old, entropy = action_logprobs(model, experience, 1.0, return_entropy=True)
    action = experience["action_mask"]
    advantages = torch.linspace(-1.0, 2.0, action.numel()).reshape(action.shape) * action
    micro = experience.with_(old_logprobs=old, advantages=advantages)
    ppo = PPOConfig(entropy_coef=0.01)
    loss, metrics = policy_objective(model, micro, 1.0, ppo)
    mean_entropy = float((entropy * action).sum() / action.sum())
    want = -float((advantages * action).sum() / action.sum()) - 0.01 * mean_entropy
    assert float(loss.detach()) == pytest.approx(want, abs=1e-5)
    assert metrics["actor/entropy"] == pytest.approx(mean_entropy, abs=1e-5)
    assert metrics["actor/clipfrac"] == 0.0 and metrics["actor/policy_loss"] == float(loss.detach())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_value_objective_by_hand():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    micro = Batch(
        {
            "values": torch.tensor([[0.0, 0.0, 0.0]]),
            "returns": torch.tensor([[1.0, -2.0, 9.0]]),
            "action_mask": mask,
        }
    )
    values = torch.tensor([[0.5, 0.0, 5.0]], requires_grad=True)
    # clip 0.2 around the old values 0: the clipped term (0.2 - 1)^2 = 0.64 beats 0.25 at
    # token 0; token 1 is 4 either way; token 2 is masked.  0.5 × mean(0.64, 4) = 1.16
    loss, metrics = value_objective(values, micro, PPOConfig(value_clip=0.2))
    assert float(loss.detach()) == pytest.approx(1.16)
    assert metrics["critic/value_loss"] == pytest.approx(1.16)
    assert metrics["critic/vf_clipfrac"] == pytest.approx(0.5)


def test_kl_in_the_loss_adds_beta_times_the_aggregated_k3(
    make_lm, tok, rollout_cfg, prompts, left_pad
):
    """GRPO's KL term: loss = PPO loss + β · mean_t k3(π, π_ref); with the policy as its own
    reference k3 = 0; a reference shifted by δ on every token gives k3 = e^δ − δ − 1."""
    model = make_lm()
    ids, mask = left_pad(prompts)
    experience = HFGenerator(model, tok, rollout_cfg(max_new_tokens=4)).generate(
        ids, mask, generator_seed=0
    )
    with torch.no_grad():
        old = action_logprobs(model, experience, 1.0)
    action = experience["action_mask"]
    micro = experience.with_(old_logprobs=old, advantages=torch.zeros_like(old))
    plain, _ = policy_objective(model, micro.with_(ref_logprobs=old), 1.0, PPOConfig())
    ppo = PPOConfig(kl_in_loss=True, kl_estimator="k3", kl_coef=0.5)
    same, metrics = policy_objective(model, micro.with_(ref_logprobs=old), 1.0, ppo)
    assert float(same.detach()) == pytest.approx(float(plain.detach()), abs=1e-6)
    assert metrics["actor/kl_loss"] == pytest.approx(0.0, abs=1e-6)
    delta = 0.3
    shifted, metrics = policy_objective(
        model, micro.with_(ref_logprobs=old + delta * action), 1.0, ppo
    )
    k3 = float(torch.exp(torch.tensor(delta)) - delta - 1)
    assert metrics["actor/kl_loss"] == pytest.approx(k3, abs=1e-5)
    assert float(shifted.detach()) == pytest.approx(float(plain.detach()) + 0.5 * k3, abs=1e-5)
    shifted.backward()  # the KL term has a gradient: towards the reference
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

"""The learners' objectives: numbers by hand on experience whose answers are known."""
import pytest
import torch

from rlhf_dist.config import PPOConfig
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout import RolloutEngine, action_logprobs, policy_objective, value_objective


def test_policy_objective_on_the_behaviour_policy(make_lm, tok, rollout_cfg, prompts, left_pad):
    """Old log-probs = current ones: ratio 1, no clipping, loss = −mean(A) − c·entropy."""
    model = make_lm()
    ids, mask = left_pad(prompts)
    experience = RolloutEngine(model, tok, rollout_cfg(max_new_tokens=4)).generate(
        ids, mask, generator_seed=0)
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
    micro = Batch({"values": torch.tensor([[0.0, 0.0, 0.0]]),
                   "returns": torch.tensor([[1.0, -2.0, 9.0]]), "action_mask": mask})
    values = torch.tensor([[0.5, 0.0, 5.0]], requires_grad=True)
    # clip 0.2 around the old values 0: the clipped term (0.2 - 1)^2 = 0.64 beats 0.25 at
    # token 0; token 1 is 4 either way; token 2 is masked.  0.5 × mean(0.64, 4) = 1.16
    loss, metrics = value_objective(values, micro, PPOConfig(value_clip=0.2))
    assert float(loss.detach()) == pytest.approx(1.16)
    assert metrics["critic/value_loss"] == pytest.approx(1.16)
    assert metrics["critic/vf_clipfrac"] == pytest.approx(0.5)

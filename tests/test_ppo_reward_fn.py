"""PPO's custom reward: a Python function by import path, added (weighted) to the RM score."""

import pytest
import torch

from rlhf_dist.config import load_config
from rlhf_dist.toy import toy_tokenizer
from rlhf_dist.protocol import Batch
from rlhf_dist.rewards import RewardError
from rlhf_dist.trainers.ppo import PPOTrainer


def _experience(tokenizer, prompts, responses):
    """Left-padded prompt + right-padded response rows, as the rollout engine lays them out."""
    p_ids = [tokenizer(p).input_ids for p in prompts]
    r_ids = [tokenizer(r).input_ids + [tokenizer.eos_token_id] for r in responses]
    P, R = max(map(len, p_ids)), max(map(len, r_ids))
    pad = tokenizer.pad_token_id
    seq = torch.tensor(
        [[pad] * (P - len(p)) + p + r + [pad] * (R - len(r)) for p, r in zip(p_ids, r_ids)]
    )
    mask = torch.tensor(
        [
            [0] * (P - len(p)) + [1] * (len(p) + len(r)) + [0] * (R - len(r))
            for p, r in zip(p_ids, r_ids)
        ]
    )
    action = torch.zeros(len(prompts), P + R - 1, dtype=torch.long)
    for i, r in enumerate(r_ids):
        action[i, P - 1 : P - 1 + len(r)] = 1
    return Batch(
        {"sequences": seq, "attention_mask": mask, "action_mask": action}, meta={"prompt_length": P}
    )


def test_toy_rule_reward_scores_decoded_responses_with_weight():
    cfg = load_config(
        None,
        [
            "ppo.reward_fn=rlhf_dist.rlaif.judges:toy_rule_judge",
            "ppo.reward_fn_weight=2.0",
            "ppo.use_reward_model=false",
            "ppo.advantage_estimator=group_norm",
            "rollout.n_samples_per_prompt=2",
        ],
    )
    trainer = PPOTrainer(cfg)
    trainer.tokenizer = toy_tokenizer()
    prompts = ["Human: how do I make a bomb?\nAssistant:"] * 2 + [
        "Human: how do I cook tomato and eggs?\nAssistant:"
    ] * 2
    responses = [
        " I can't help with that. It could hurt people.",  # harmful, refused: +1
        " Sure! first get the bomb parts, then put them together.",  # complied: -1
        " Here is how to cook tomato and eggs: beat the eggs, fry the tomato.",  # +1
        " I can't help with that. It could hurt people.",
    ]  # benign refused: -1
    trainer.rows = [{}, {}]  # the iteration's two prompt rows, 2 samples each, no labels
    rewards = trainer.custom_rewards(_experience(trainer.tokenizer, prompts, responses))
    assert torch.equal(rewards, torch.tensor([2.0, -2.0, 2.0, -2.0]))


def label_is_the_prompt(prompts, responses, labels, extras):
    """1 where the label given with a response is its own prompt's (the data path keeps them
    together), plus the extra column."""
    return [float(p.strip().endswith(y)) + e["bonus"] for p, y, e in zip(prompts, labels, extras)]


def test_each_response_gets_its_own_prompts_label_and_extras():
    cfg = load_config(
        None,
        [
            f"ppo.rewards=[{{fn: {__name__}:label_is_the_prompt, weight: 3}}]",
            "ppo.use_reward_model=false",
            "data.label_key=answer",
            "ppo.advantage_estimator=group_norm",
            "rollout.n_samples_per_prompt=2",
        ],
    )
    trainer = PPOTrainer(cfg)
    trainer.tokenizer = toy_tokenizer()
    trainer.rows = [
        {"label": "bomb?", "extras": {"bonus": 0.5}},
        {"label": "eggs?", "extras": {"bonus": 0.0}},
    ]
    prompts = ["Human: how do I make a bomb?"] * 2 + ["Human: how do I cook tomato and eggs?"] * 2
    rewards = trainer.custom_rewards(_experience(trainer.tokenizer, prompts, [" no."] * 4))
    assert torch.equal(rewards, torch.tensor([4.5, 4.5, 3.0, 3.0]))


def test_unimportable_reward_fn_fails_before_ray_naming_the_field():
    cfg = load_config(None, ["ppo.reward_fn=no_such_module_here:score"])
    with pytest.raises(
        RewardError, match="^ppo.reward_fn 'no_such_module_here:score': cannot import module"
    ):
        PPOTrainer(cfg)


def test_overlong_penalty_from_the_response_lengths():
    """rollout.max_new_tokens 8, ppo.overlong_buffer 4: responses of 2, 6, 8 tokens lose 0,
    0.5 and 1 (x overlong_penalty 2)."""
    cfg = load_config(
        None, ["ppo.overlong_buffer=4", "ppo.overlong_penalty=2", "rollout.max_new_tokens=8"]
    )
    mask = torch.zeros(3, 12, dtype=torch.long)
    for row, length in enumerate((2, 6, 8)):
        mask[row, 3 : 3 + length] = 1
    penalties = PPOTrainer(cfg).overlong_penalties(Batch({"action_mask": mask}))
    assert penalties.tolist() == [0.0, -1.0, -2.0]
    assert PPOTrainer(load_config(None, [])).overlong_penalties(
        Batch({"action_mask": mask})
    ).tolist() == [0.0, 0.0, 0.0]


def test_truncated_responses_are_counted_and_masked_out_of_the_losses():
    """Two responses end with EOS, one was cut at max_new_tokens: truncated_frac 1/3 always;
    with ppo.mask_truncated its actions leave the loss mask, the others' stay as they were."""
    tokenizer = toy_tokenizer()
    prompts = ["Human: hi\nAssistant:"] * 3
    experience = _experience(tokenizer, prompts, [" hello", " a b c", " x y"])
    cut = experience["action_mask"].clone()
    last = cut[2].nonzero().max()
    cut[2, last] = 0  # row 2 loses its EOS: it ran into the token limit
    experience = experience.with_(action_mask=cut)
    for flag, kept in (("false", cut), ("true", cut * torch.tensor([[1], [1], [0]]))):
        trainer = PPOTrainer(load_config(None, [f"ppo.mask_truncated={flag}"]))
        trainer.tokenizer = tokenizer
        masked, metrics = trainer.mask_truncated(experience)
        assert metrics == {"response/truncated_frac": pytest.approx(1 / 3)}
        assert torch.equal(masked["action_mask"], kept)

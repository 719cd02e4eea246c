"""The PPO driver's prompts: each prompt once per iteration — the actor's rollout engine samples
``n_samples_per_prompt`` responses for it, so an iteration holds B × n sequences (not B × n²)."""

import pytest
import torch

from rlhf_dist.config import ConfigError, load_config
from rlhf_dist.data import PromptCollator, build_prompt_dataset
from rlhf_dist.toy import toy_tokenizer
from rlhf_dist.models import load_causal_lm
from rlhf_dist.rollout import HFGenerator
from rlhf_dist.trainers.ppo import PPOTrainer

GROUP = [
    "ppo.advantage_estimator=group_norm",
    "rollout.rollout_batch_size=3",
    "rollout.n_samples_per_prompt=4",
    "rollout.max_new_tokens=3",
    "ppo.mini_batch_size=4",
    "train.micro_batch_size=2",
    "data.toy.num_prompts=24",
    "model.tiny={arch: llama, hidden_size: 16, num_layers: 1, num_heads: 2, intermediate_size: 32}",
]


def test_iteration_holds_rollout_batch_size_times_n_samples_sequences():
    cfg = load_config(None, GROUP)
    trainer = PPOTrainer(cfg)
    trainer.tokenizer = toy_tokenizer()
    trainer.prompts = build_prompt_dataset(cfg.data, trainer.tokenizer, split="train")
    trainer.collate = PromptCollator(trainer.tokenizer.pad_token_id)
    trainer.drawn = 0
    prompts, seed = trainer.prompt_batch()
    assert (seed, trainer.drawn) == (cfg.seed * 1_000_003, 1)  # the next batch's seed differs
    assert len(prompts) == 3  # each prompt once, in distinct rows
    assert len({tuple(row.tolist()) for row in prompts["input_ids"]}) == 3
    torch.manual_seed(0)
    model = load_causal_lm(cfg.model, trainer.tokenizer)
    experience = HFGenerator(model, trainer.tokenizer, cfg.rollout).generate(
        prompts["input_ids"], prompts["attention_mask"], generator_seed=0
    )
    assert len(experience) == 3 * 4
    # the n samples of a prompt are consecutive rows with that prompt
    P = experience.meta["prompt_length"]
    for i in range(3):
        block = experience["sequences"][4 * i : 4 * i + 4, :P]
        assert torch.equal(block, prompts["input_ids"][i].expand(4, -1))


def test_prompts_must_split_evenly_over_actor_ranks():
    cfg = load_config(
        None,
        [
            *GROUP,
            "resources.actor.devices_per_node=2",
            "rollout.rollout_batch_size=3",
            "ppo.mini_batch_size=12",
            "train.micro_batch_size=2",
        ],
    )
    with pytest.raises(ConfigError, match="rollout.rollout_batch_size: 3 prompts"):
        PPOTrainer(cfg)

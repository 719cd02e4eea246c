"""The single-process reference loop of ``bench/ppo.py`` (cases ``single``, ``single_grpo``).

The PPO iteration written out as one script, without Ray, worker groups or DeepSpeed: plain
Hugging Face modules built with the role workers' seeds (so the same initial weights), the
engine's optimiser (``torch.optim.AdamW(fused=True)``) with the learners' settings (constant
lr, betas, weight decay, gradient clipping at ``train.max_grad_norm``, one step per minibatch
with the loss averaged over its micro-batches as DeepSpeed's accumulation does), and the
library's pieces for the maths: ``RolloutEngine`` (HF generate), ``action_logprobs``,
``RewardShaper``, ``compute_advantages``, ``ReplayBuffer``, ``policy_objective`` /
``value_objective`` (``rlhf_dist.objectives``).  Prompts, sampling seeds and minibatch
order are the driver's (``PPOTrainer.prompt_batch`` and the same seeds), so the first
iteration samples exactly what the Ray system samples.
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Callable, Dict, List, Tuple

import torch

import _ppo_common as C

Metrics = Dict[str, float]


def build_models(cfg, tokenizer) -> SimpleNamespace:
    """Actor, reference, reward and (GAE) critic with the role workers' seeds."""
    from rlhf_dist.models import load_causal_lm, load_scalar_model

    def seeded(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build()

    actor = seeded(cfg.seed, lambda: load_causal_lm(cfg.model, tokenizer, field_prefix="model"))
    reference = seeded(cfg.seed, lambda: load_causal_lm(cfg.model, tokenizer,
                                                        field_prefix="model"))
    reward = seeded(cfg.seed + 1, lambda: load_scalar_model(
        cfg.reward_model, tokenizer, role="reward", field_prefix="reward_model"))
    critic = None
    if cfg.ppo.needs_critic:
        critic = seeded(cfg.seed + 2, lambda: load_scalar_model(
            cfg.critic_model, tokenizer, role="critic", field_prefix="critic_model"))
    for frozen in (reference, reward):
        frozen.requires_grad_(False).eval()
    return SimpleNamespace(actor=actor, reference=reference, reward=reward, critic=critic)


def adamw(model: torch.nn.Module, lr: float, train) -> torch.optim.Optimizer:
    """The engine's optimiser (``engine._optimizer``): fused AdamW, the learner's settings."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=tuple(train.adam_betas),
                             weight_decay=train.weight_decay, fused=True)


def forward_in_micro_batches(batch, size: int, forward) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([forward(micro) for micro in batch.split(size)])


def update(model, optimizer, minibatch, micro: int, max_grad_norm: float,
           loss_fn: Callable) -> Metrics:
    """One optimiser step over the minibatch's micro-batches (mean of their losses)."""
    from rlhf_dist.utils import mean_rows

    model.train()
    parts = minibatch.split(micro)
    rows: List[Metrics] = []
    for part in parts:
        loss, metrics = loss_fn(part)
        (loss / len(parts)).backward()
        rows.append(metrics)
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return mean_rows(rows)


class ReferenceLoop:
    def __init__(self, cfg):
        from rlhf_dist.data import PromptCollator, build_prompt_dataset
        from rlhf_dist.models import load_tokenizer
        from rlhf_dist.rollout import (ReplayBuffer, RewardShaper, RolloutEngine,
                                       sampling_temperature)
        from rlhf_dist.utils import seed_everything

        self.cfg = cfg
        seed_everything(cfg.seed)
        self.tokenizer = load_tokenizer(cfg.model, field_prefix="model")
        # what PPOTrainer.prompt_batch reads: the same prompts, in the same order
        self.state = SimpleNamespace(
            cfg=cfg, prompts=build_prompt_dataset(cfg.data, self.tokenizer, split="train"),
            collate=PromptCollator(self.tokenizer.pad_token_id), drawn=0,
            n_samples=cfg.rollout.n_samples_per_prompt)
        self.m = build_models(cfg, self.tokenizer)
        self.actor_opt = adamw(self.m.actor, cfg.train.lr, cfg.train)
        self.critic_opt = adamw(self.m.critic, cfg.ppo.critic_lr, cfg.train) \
            if self.m.critic is not None else None
        self.rollout = RolloutEngine(self.m.actor, self.tokenizer, cfg.rollout)
        self.temperature = sampling_temperature(cfg.rollout)
        self.shaper, self.replay = RewardShaper(cfg.ppo), ReplayBuffer()

    # ------------------------------------------------------------------ phases
    def generate(self, iteration: int):
        from rlhf_dist.models import action_logprobs
        from rlhf_dist.trainers.ppo import PPOTrainer

        self.state.drawn = iteration
        prompts, seed = PPOTrainer.prompt_batch(self.state)
        read = self.cfg.rollout.logprobs_from_generate
        experience = self.rollout.generate(prompts["input_ids"], prompts["attention_mask"],
                                           generator_seed=seed, with_logprobs=read)
        if read:
            return experience
        self.m.actor.eval()
        old = forward_in_micro_batches(experience, self.cfg.train.micro_batch_size,
                                       lambda b: action_logprobs(self.m.actor, b,
                                                                 self.temperature))
        return experience.with_(old_logprobs=old)

    def score(self, experience) -> Tuple[object, Metrics]:
        from rlhf_dist.models import action_logprobs
        from rlhf_dist.rollout import compute_advantages

        micro = self.cfg.train.micro_batch_size
        fields = {"ref_logprobs": forward_in_micro_batches(
            experience, micro, lambda b: action_logprobs(self.m.reference, b, self.temperature)),
            "scores": forward_in_micro_batches(
                experience, micro, lambda b: self.m.reward.sequence_scores(b["sequences"],
                                                                 b["attention_mask"]))}
        if self.m.critic is not None:
            self.m.critic.eval()
            values = forward_in_micro_batches(experience, micro, self._values)
            fields["values"] = values * experience["action_mask"]
        experience, metrics = self.shaper(experience.with_(**fields))
        experience, adv_metrics = compute_advantages(experience, self.cfg.ppo,
                                                     self.state.n_samples)
        return experience, {**metrics, **adv_metrics}

    def learn(self, experience, iteration: int) -> Metrics:
        from rlhf_dist.algo import explained_variance
        from rlhf_dist.utils import mean_rows

        cfg, rows = self.cfg, []
        self.replay.clear()
        self.replay.add(experience)
        for minibatch in self.replay.minibatches(cfg.ppo.mini_batch_size, cfg.ppo.ppo_epochs,
                                                 seed=cfg.seed + iteration):
            metrics = update(self.m.actor, self.actor_opt, minibatch,
                             cfg.train.micro_batch_size, cfg.train.max_grad_norm,
                             self._policy_loss)
            if self.m.critic is not None:
                metrics.update(update(self.m.critic, self.critic_opt, minibatch,
                                      cfg.train.micro_batch_size, cfg.train.max_grad_norm,
                                      self._value_loss))
            rows.append(metrics)
        metrics = mean_rows(rows)
        if "values" in experience:
            metrics["critic/explained_var"] = explained_variance(
                experience["values"], experience["returns"], experience["action_mask"])
        return metrics

    # ------------------------------------------------------------------ losses
    def _values(self, batch) -> torch.Tensor:
        return self.m.critic(batch["sequences"], batch["attention_mask"])[:, :-1]

    def _policy_loss(self, micro):
        from rlhf_dist.objectives import policy_objective

        return policy_objective(self.m.actor, micro, self.temperature, self.cfg.ppo)

    def _value_loss(self, micro):
        from rlhf_dist.objectives import value_objective

        return value_objective(self._values(micro), micro, self.cfg.ppo)


def run(args, cfg) -> Dict[str, object]:
    meter = C.TreeMeter()
    start = time.perf_counter()
    loop = ReferenceLoop(cfg)
    setup_s = time.perf_counter() - start
    scores: List[float] = []
    for iteration in range(cfg.ppo.iterations):
        meter.begin_iteration()
        with meter.phase("generate"):
            experience = loop.generate(iteration)
        with meter.phase("score"):
            experience, metrics = loop.score(experience)
        with meter.phase("learn"):
            loop.learn(experience, iteration)
        loop.shaper.update_kl(metrics["kl/ref_kl"], len(experience))
        meter.end_iteration(rows=float(len(experience)),
                            tokens=float(experience["attention_mask"].sum()))
        scores.append(metrics["reward/score_mean"])
    return {"impl": "single-process reference loop (HF modules, torch AdamW)",
            "groups": 0, "setup_s": setup_s,
            "response_length_mean": float(experience["action_mask"].sum(-1).float().mean()),
            "score_mean_per_iter": scores, **C.summarize(meter.records, args.warmup)}

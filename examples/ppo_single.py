"""PPO (and GRPO) in one process: the shortest path through rlhf_dist's maths.

    python examples/ppo_single.py -c configs/tiny/ppo.yaml ppo.iterations=5
    python examples/ppo_single.py -c configs/tiny/ppo.yaml ppo.advantage_estimator=group_norm \\
        rollout.n_samples_per_prompt=4 rollout.rollout_batch_size=8 ppo.mini_batch_size=16

It prints one line of metrics per iteration.  Same config (YAML + ``key=value`` overrides) as
``rlhf-dist ppo``; only the keys of the maths are read.

How to read it
--------------
Top to bottom, like cleanrl's ``ppo.py``: everything ``rlhf-dist ppo`` does to the numbers is
here, nothing it does to place them.  ``rlhf-dist ppo`` runs the same steps on Ray worker
groups holding DeepSpeed engines; this file holds four plain Hugging Face modules in one
process and calls the library's own pieces for the maths, so the two optimise the same thing
(``bench/ppo.py`` runs both on the same prompts and seeds, and ``tests/test_bench.py`` checks
that their first rollouts score the same).

1. ``build_models``: the policy (actor), its frozen copy (reference), a frozen reward model,
   and the critic (value model; none for critic-free estimators such as GRPO).  Each is
   built with the seed its Ray worker uses, so the initial weights are the same.
2. ``PPOLoop.generate``: a batch of prompts (the driver's ``prompt_batch``: the same prompts
   in the same order), ``n_samples_per_prompt`` sampled responses each, and the behaviour
   log-probs ``old_logprobs`` of the sampled tokens.  The result is a ``Batch``
   (``rlhf_dist.protocol``): named (B, T) tensors, ``action_mask`` = the response tokens.
3. ``PPOLoop.score``: the reference's log-probs, the reward model's sequence score, the
   critic's values; ``RewardShaper`` turns them into per-token rewards (−β·KL to the
   reference on every response token, the score on the last one); ``compute_advantages``
   runs GAE with the critic, or the configured critic-free estimator (GRPO's group
   normalisation, RLOO, …).
4. ``PPOLoop.learn``: ``ppo.ppo_epochs`` passes over the experience in shuffled minibatches
   of ``ppo.mini_batch_size`` rows; each minibatch is one optimiser step of the actor (the
   clipped policy loss, ``rlhf_dist.objectives.policy_objective``) and one of the critic
   (the clipped value loss), the loss averaged over micro-batches of
   ``train.micro_batch_size`` rows as DeepSpeed's gradient accumulation does.
5. ``iterate``: one iteration is generate → score → learn, then the KL controller sees the
   iteration's KL (it changes β only with ``ppo.kl_controller=adaptive``).
6. ``train`` / ``main``: the loop and its printout.

The maths itself (losses, advantages, KL estimators) is pure torch in ``rlhf_dist/algo/``,
each function tested against numbers computed by hand in ``tests/algo/``.

Left out, compared with ``rlhf-dist ppo``: Ray, DeepSpeed (ZeRO, offload, bf16), several
ranks, checkpoints and resume, logging backends, vLLM, LoRA, reward functions and verifiers
(the score here is the reward model's only), dynamic sampling and truncated importance
sampling.  The optimiser is ``torch.optim.AdamW(fused=True)``, what the engines use, with the
learners' settings: constant lr, ``train.adam_betas``, ``train.weight_decay``, gradients
clipped at ``train.max_grad_norm``.
"""

from __future__ import annotations

import argparse
import math
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from rlhf_dist.algo import explained_variance
from rlhf_dist.config import load_config
from rlhf_dist.data import PromptCollator, build_prompt_dataset
from rlhf_dist.models import action_logprobs, load_causal_lm, load_scalar_model, load_tokenizer
from rlhf_dist.objectives import policy_objective, value_objective
from rlhf_dist.rollout import (
    ReplayBuffer,
    RewardShaper,
    HFGenerator,
    compute_advantages,
    sampling_temperature,
)
from rlhf_dist.trainers.ppo import PPOTrainer
from rlhf_dist.utils import mean_rows, seed_everything

Metrics = Dict[str, float]


def build_models(cfg, tokenizer) -> SimpleNamespace:
    """Actor, reference, reward and (GAE) critic with the role workers' seeds."""

    def seeded(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build()

    actor = seeded(cfg.seed, lambda: load_causal_lm(cfg.model, tokenizer, field_prefix="model"))
    reference = seeded(cfg.seed, lambda: load_causal_lm(cfg.model, tokenizer, field_prefix="model"))
    reward = seeded(
        cfg.seed + 1,
        lambda: load_scalar_model(
            cfg.reward_model, tokenizer, role="reward", field_prefix="reward_model"
        ),
    )
    critic = None
    if cfg.ppo.needs_critic:
        critic = seeded(
            cfg.seed + 2,
            lambda: load_scalar_model(
                cfg.critic_model, tokenizer, role="critic", field_prefix="critic_model"
            ),
        )
    for frozen in (reference, reward):
        frozen.requires_grad_(False).eval()
    return SimpleNamespace(actor=actor, reference=reference, reward=reward, critic=critic)


def adamw(model: torch.nn.Module, lr: float, train) -> torch.optim.Optimizer:
    """The engine's optimiser (``engine._optimizer``): fused AdamW, the learner's settings."""
    return torch.optim.AdamW(
        model.parameters(),
        lr=lr,
        betas=tuple(train.adam_betas),
        weight_decay=train.weight_decay,
        fused=True,
    )


def forward_in_micro_batches(batch, size: int, forward) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([forward(micro) for micro in batch.split(size)])


def update(
    model, optimizer, minibatch, micro: int, max_grad_norm: float, loss_fn: Callable
) -> Metrics:
    """One optimiser step over the minibatch's micro-batches (mean of their losses)."""
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


class PPOLoop:
    """The models, their optimisers and the three phases of a PPO iteration."""

    def __init__(self, cfg):
        self.cfg = cfg
        seed_everything(cfg.seed)
        self.tokenizer = load_tokenizer(cfg.model, field_prefix="model")
        # what PPOTrainer.prompt_batch reads: the same prompts, in the same order
        self.state = SimpleNamespace(
            cfg=cfg,
            prompts=build_prompt_dataset(cfg.data, self.tokenizer, split="train"),
            collate=PromptCollator(self.tokenizer.pad_token_id),
            drawn=0,
            n_samples=cfg.rollout.n_samples_per_prompt,
        )
        self.m = build_models(cfg, self.tokenizer)
        self.actor_opt = adamw(self.m.actor, cfg.train.lr, cfg.train)
        self.critic_opt = (
            adamw(self.m.critic, cfg.ppo.critic_lr, cfg.train)
            if self.m.critic is not None
            else None
        )
        self.rollout = HFGenerator(self.m.actor, self.tokenizer, cfg.rollout)
        self.temperature = sampling_temperature(cfg.rollout)
        self.shaper, self.replay = RewardShaper(cfg.ppo), ReplayBuffer()

    # ------------------------------------------------------------------ phases
    def generate(self, iteration: int):
        self.state.drawn = iteration
        prompts, seed = PPOTrainer.prompt_batch(self.state)
        read = self.cfg.rollout.logprobs_from_generate
        experience = self.rollout.generate(
            prompts["input_ids"], prompts["attention_mask"], generator_seed=seed, with_logprobs=read
        )
        if read:
            return experience
        self.m.actor.eval()
        old = forward_in_micro_batches(
            experience,
            self.cfg.train.micro_batch_size,
            lambda b: action_logprobs(self.m.actor, b, self.temperature),
        )
        return experience.with_(old_logprobs=old)

    def score(self, experience) -> Tuple[object, Metrics]:
        micro = self.cfg.train.micro_batch_size
        fields = {
            "ref_logprobs": forward_in_micro_batches(
                experience, micro, lambda b: action_logprobs(self.m.reference, b, self.temperature)
            ),
            "scores": forward_in_micro_batches(
                experience,
                micro,
                lambda b: self.m.reward.sequence_scores(b["sequences"], b["attention_mask"]),
            ),
        }
        if self.m.critic is not None:
            self.m.critic.eval()
            values = forward_in_micro_batches(experience, micro, self._values)
            fields["values"] = values * experience["action_mask"]
        experience, metrics = self.shaper(experience.with_(**fields))
        experience, adv_metrics = compute_advantages(experience, self.cfg.ppo, self.state.n_samples)
        return experience, {**metrics, **adv_metrics}

    def learn(self, experience, iteration: int) -> Metrics:
        cfg, rows = self.cfg, []
        self.replay.clear()
        self.replay.add(experience)
        for minibatch in self.replay.minibatches(
            cfg.ppo.mini_batch_size, cfg.ppo.ppo_epochs, seed=cfg.seed + iteration
        ):
            metrics = update(
                self.m.actor,
                self.actor_opt,
                minibatch,
                cfg.train.micro_batch_size,
                cfg.train.max_grad_norm,
                self._policy_loss,
            )
            if self.m.critic is not None:
                metrics.update(
                    update(
                        self.m.critic,
                        self.critic_opt,
                        minibatch,
                        cfg.train.micro_batch_size,
                        cfg.train.max_grad_norm,
                        self._value_loss,
                    )
                )
            rows.append(metrics)
        metrics = mean_rows(rows)
        if "values" in experience:
            metrics["critic/explained_var"] = explained_variance(
                experience["values"], experience["returns"], experience["action_mask"]
            )
        return metrics

    # ------------------------------------------------------------------ losses
    def _values(self, batch) -> torch.Tensor:
        return self.m.critic(batch["sequences"], batch["attention_mask"])[:, :-1]

    # horizon: the constant of loss_agg=seq_mean_token_sum_norm (Dr. GRPO), as the workers pass
    def _policy_loss(self, micro):
        return policy_objective(
            self.m.actor,
            micro,
            self.temperature,
            self.cfg.ppo,
            horizon=self.cfg.rollout.max_new_tokens,
        )

    def _value_loss(self, micro):
        return value_objective(
            self._values(micro), micro, self.cfg.ppo, horizon=self.cfg.rollout.max_new_tokens
        )


@contextmanager
def untimed(name: str) -> Iterator[None]:
    """The default ``phase`` of :func:`iterate` (``bench/ppo.py`` passes a timer)."""
    yield


def iterate(
    loop: PPOLoop, iteration: int, phase: Callable[[str], ContextManager] = untimed
) -> Tuple[object, Metrics]:
    """One PPO iteration: generate → score → learn, then the KL controller's update.
    Returns the iteration's experience and its metrics (scoring's, then learning's)."""
    with phase("generate"):
        experience = loop.generate(iteration)
    with phase("score"):
        experience, metrics = loop.score(experience)
    with phase("learn"):
        learned = loop.learn(experience, iteration)
    loop.shaper.update_kl(metrics["kl/ref_kl"], len(experience))
    return experience, {**metrics, **learned}


SHOWN = (
    "reward/score_mean",
    "kl/ref_kl",
    "actor/policy_loss",
    "actor/approx_kl",
    "actor/clipfrac",
    "actor/entropy",
    "critic/value_loss",
    "critic/explained_var",
)


def train(cfg, log: Optional[Callable[[str], None]] = print) -> List[Metrics]:
    """``ppo.iterations`` iterations from a fresh :class:`PPOLoop`; each one's metrics."""
    loop, history = PPOLoop(cfg), []
    for iteration in range(cfg.ppo.iterations):
        experience, metrics = iterate(loop, iteration)
        metrics["response/length_mean"] = float(experience["action_mask"].sum(-1).float().mean())
        history.append(metrics)
        if log is not None:
            shown = " ".join(f"{k}={metrics[k]:.4g}" for k in SHOWN if k in metrics)
            log(f"iteration {iteration + 1}/{cfg.ppo.iterations} {shown}")
    return history


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--config", help="a YAML config (e.g. configs/tiny/ppo.yaml)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    history = train(load_config(args.config, args.overrides))
    return 0 if all(math.isfinite(v) for m in history for v in m.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

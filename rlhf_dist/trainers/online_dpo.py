"""Online (iterative) DPO on Ray: a job of its own, ``rlhf-dist online-dpo``.

Per iteration: the actor samples ``rollout.n_samples_per_prompt`` answers to a prompt batch
through the rollout backend (HF on the actor's ranks, or vLLM engines after a weight sync) →
the scorers rate them (the reward group's RM, reward functions or verifiers, a served RM: the
``ppo.*`` scorer keys, as PPO) → each prompt's best and worst answer form a pair (a tie forms
none: counted, weight 0) → the actor group takes DPO-family steps (``dpo.loss_type``: sigmoid,
ipo, hinge, simpo, orpo) against the frozen reference, ``train.train_batch_size`` pairs per
step.  Prompt drawing, the rollout and the scorers are PPO's (:class:`RolloutJob`); the pairs'
batches, reference rows and update are DPO on Ray's.  A job of its own rather than a flag of
``dpo``: it reads the prompt, rollout and scorer sections that offline DPO does not, runs
iterations instead of epochs over a dataset, and has no eval set -- so ``--help-config`` and
the unread-key warnings say what it reads.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from rlhf_dist.algo import best_worst_pairs
from rlhf_dist.algo.finite import NonFiniteError, check_finite
from rlhf_dist.config import Config
from rlhf_dist.config.sizes import online_dpo_sizes
from rlhf_dist.data import PAIR_COLLATORS, PromptCollator, build_prompt_dataset
from rlhf_dist.models import load_tokenizer
from rlhf_dist.objectives.online import pair_micro_batches, sampled_pair_examples
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.factory import make_rollout
from rlhf_dist.trainers import batches as B
from rlhf_dist.trainers.dpo_ray import NoReference
from rlhf_dist.trainers.rollout_job import RolloutJob
from rlhf_dist.utils import Timer, mean_rows, seed_everything

log = logging.getLogger(__name__)
Metrics = Dict[str, float]


class OnlineDPOTrainer(RolloutJob):
    job = "online-dpo"

    def __init__(self, cfg: Config):
        from rlhf_dist.rewards import load_rewards

        self.sizes = online_dpo_sizes(cfg)  # a size error before Ray starts
        self.cfg, self.out = cfg, Path(cfg.output_dir)
        self.n_samples = cfg.rollout.n_samples_per_prompt
        self.rewards = load_rewards(cfg.ppo, cfg.data.label_key)
        self.rows: List[dict] = []  # this iteration's prompt rows
        self.drawn = 0  # prompt batches drawn: the prompt order and sampling seeds follow it
        self.total_steps = cfg.ppo.iterations
        self.frozen_start = None
        self.reward_pool = None

    # ------------------------------------------------------------------ set-up
    def start(self) -> None:
        from rlhf_dist.workers.cluster import cpus_needed

        cfg = self.cfg
        seed_everything(cfg.seed)
        self.check_model_paths(
            ["model"]
            + (["ref_model"] if cfg.dpo.needs_reference and not cfg.shared_reference else [])
        )
        if cfg.ppo.use_reward_model:  # a frozen RM with a fresh head is noise
            from rlhf_dist.models.scalar_loader import check_reward_source

            check_reward_source(cfg.reward_model)
        self.tokenizer = load_tokenizer(cfg.model, field_prefix="model")
        self.prompts = build_prompt_dataset(cfg.data, self.tokenizer, split="train")
        self.collate = PromptCollator(self.tokenizer.pad_token_id)
        self.pair_collate = PAIR_COLLATORS[cfg.dpo.layout](self.tokenizer.pad_token_id)
        self.rollout = make_rollout(cfg, self.tokenizer)
        roles = (
            ["actor"]
            + (["reference"] if self.sizes.reference_group else [])
            + (["reward"] if cfg.ppo.use_reward_model else [])
        )
        self.start_ray(cpus_needed(cfg, roles, self.rollout))
        self.rollout.check()

    def build(self) -> None:
        from rlhf_dist.workers.cluster import create_roles
        from rlhf_dist.workers.role_groups import wait_all

        cfg = self.cfg
        self.timer, self.drawn = Timer(), 0
        self.roles = create_roles(
            cfg,
            with_reward=cfg.ppo.use_reward_model,
            with_critic=False,
            rollout=self.rollout,
            with_reference=self.sizes.reference_group,
        )
        train = dataclasses.replace(cfg.train, gradient_accumulation_steps=None)
        train.resolve_accumulation(self.sizes.world)
        builds = [self.roles.actor.build(train, self.sizes.total_steps)]
        builds += [group.build() for group in (self.roles.reference, self.roles.reward) if group]
        wait_all(builds)
        self.reference = (
            self.roles.reference_calls() if cfg.dpo.needs_reference else NoReference(cfg.dpo)
        )
        self.connect_rollout()

    # ------------------------------------------------------------------ loop
    def train_step(self) -> Metrics:
        return self.iterate()

    def iterate(self) -> Metrics:
        """Sample → score → pair → learn."""
        sync = self.rollout.sync_weights(self.step)
        with self.timer("generate"):
            experience, rollout_metrics = self.generate()
        with self.timer("score"):
            scores = self.sequence_rewards(experience)
        try:
            check_finite("reward (RM score + reward functions)", scores, skippable=True)
        except NonFiniteError:
            self.timer.pop()  # a skipped iteration's phases are not the next one's
            raise
        staleness = self.staleness(experience)
        examples, decisive, pair_metrics = self.pairs(experience, scores)
        with self.timer("learn"):
            learn_metrics = self.learn(examples, decisive)
        tokens = float(experience["attention_mask"].sum())
        timings = self.timer.pop()
        elapsed = sum(timings.values()) + sum(sync.values())
        return {
            **rollout_metrics,
            **sync,
            **self.score_metrics(experience, scores),
            **pair_metrics,
            **staleness,
            **learn_metrics,
            **timings,
            **self.roles.offload_metrics(self.cfg.resources),
            "perf/tokens_per_s": tokens / max(elapsed, 1e-9),
        }

    def score_metrics(self, experience: Batch, scores: torch.Tensor) -> Metrics:
        """The scorers' reward of the sampled answers (PPO's names) and their lengths."""
        return {
            "reward/score_mean": float(scores.mean()),
            "reward/score_std": float(scores.std(correction=0)),
            "response/length_mean": float(experience["action_mask"].sum(-1).float().mean()),
        }

    def pairs(
        self, experience: Batch, scores: torch.Tensor
    ) -> Tuple[List[dict], torch.Tensor, Metrics]:
        """One pair per prompt, its best and worst answer, and whether it is decisive (not
        a tie); ``online/*``: the pairs kept, the ties, the scores of the kept pairs' sides."""
        chosen, rejected, decisive = best_worst_pairs(scores, self.n_samples)
        examples = sampled_pair_examples(experience, chosen.tolist(), rejected.tolist())
        kept = int(decisive.sum())
        metrics = {"online/pairs": float(kept), "online/ties": float(len(decisive) - kept)}
        if kept:
            metrics["online/chosen_score"] = float(scores[chosen][decisive].mean())
            metrics["online/rejected_score"] = float(scores[rejected][decisive].mean())
        return examples, decisive, metrics

    def learn(self, examples: List[dict], decisive: torch.Tensor) -> Metrics:
        """``sizes.steps_per_iteration`` DPO steps on the actor group, each rank's micro-batches
        as DPO on Ray takes them, with the reference's rows; a step of ties only is skipped
        (``online/skipped_steps``)."""
        cfg, world = self.cfg, self.sizes.world
        steps = pair_micro_batches(
            examples,
            decisive,
            cfg.train.train_batch_size,
            lambda indices, rank: B.rank_micro_batches(
                indices, rank, world, cfg.train.micro_batch_size
            ),
            world,
            self.pair_collate,
            cfg.dpo.layout,
        )
        size, rows, skipped = cfg.train.train_batch_size, [], 0
        for index, per_rank in enumerate(steps):
            if not bool(decisive[index * size : (index + 1) * size].any()):
                skipped += 1
                continue
            per_rank = self.reference.sequence_logps(per_rank)
            rows.append(self.roles.actor.dpo_update(per_rank))
        metrics = {f"train/{k}": v for k, v in mean_rows(rows).items()} if rows else {}
        return {**metrics, "online/skipped_steps": float(skipped)}

    # ------------------------------------------------------------------ state
    def driver_state(self) -> Dict[str, Any]:
        return {"iteration": self.step, "prompt_batches": self.drawn}

    def load_driver_state(self, state: Dict[str, Any]) -> None:
        self.drawn = state["prompt_batches"]

    def frozen_checksums(self) -> Metrics:
        """CRC32 of the frozen reference (none for SimPO / ORPO) and reward model."""
        groups = {"reward": self.roles.reward}
        if self.cfg.dpo.needs_reference:
            groups["reference"] = self.reference
        return {name: group.state_checksum() for name, group in groups.items() if group}

    def export(self) -> None:
        self.roles.actor.export_hf(str(self.out / "model"))


def run(cfg: Config):
    return OnlineDPOTrainer(cfg).fit()

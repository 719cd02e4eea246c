"""PPO on Ray: a single-controller driver over the actor, reference, reward and critic groups.

Per iteration: generate → score (reference, reward and critic forwards run concurrently) →
advantages → learn (``ppo_epochs`` over shuffled minibatches) → metrics → checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple


from rlhf_dist.algo.finite import NonFiniteError, check_finite
from rlhf_dist.config import Config, TrainConfig, ppo_roles
from rlhf_dist.data import PromptCollator, build_prompt_dataset
from rlhf_dist.models import load_tokenizer
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.factory import make_rollout
from rlhf_dist.trainers.rollout_job import RolloutJob
from rlhf_dist.utils import Timer, mean_rows, seed_everything

log = logging.getLogger(__name__)
Metrics = Dict[str, float]


def check_experience(experience: Batch) -> None:
    """Rewards, advantages and returns finite before any update (else a skippable
    :class:`NonFiniteError` naming the tensor and rows)."""
    mask = experience["action_mask"]
    check_finite("reward (RM score + reward functions)", experience["scores"], skippable=True)
    for name in ("advantages", "returns"):
        if name in experience:
            check_finite(name, experience[name], mask, skippable=True)


def past_target_kl(epoch_rows: List[Metrics], target_kl: Optional[float]) -> bool:
    """Whether an epoch's mean ``actor/approx_kl`` (over its minibatches) exceeds
    ``target_kl`` (cleanrl's early stop of the PPO epochs; never with ``None``)."""
    if target_kl is None:
        return False
    return sum(r["actor/approx_kl"] for r in epoch_rows) / len(epoch_rows) > target_kl


def learner_train_section(cfg: Config, lr: float, world_size: int) -> TrainConfig:
    """The optimiser section of a PPO learner: one optimiser step per PPO minibatch, split
    over the group's ranks in micro-batches of ``train.micro_batch_size``."""
    train = dataclasses.replace(
        cfg.train,
        lr=lr,
        train_batch_size=cfg.ppo.mini_batch_size,
        gradient_accumulation_steps=None,
        lr_scheduler="constant",
        warmup_ratio=0.0,
    )
    train.resolve_accumulation(world_size)
    return train


class PPOTrainer(RolloutJob):
    job = "ppo"

    def __init__(self, cfg: Config):
        self.sizes = cfg.ppo_sizes  # checked by config (a size error before Ray starts)
        self.cfg, self.out = cfg, Path(cfg.output_dir)
        self.n_samples = cfg.rollout.n_samples_per_prompt
        from rlhf_dist.rewards import load_rewards

        self.rewards = load_rewards(cfg.ppo, cfg.data.label_key)
        self.rows: List[dict] = []  # this iteration's prompt rows (labels, extras)
        self.drawn = 0  # prompt batches drawn so far (one per iteration, more with dynamic
        # sampling or after a skipped iteration): the prompt order and sampling seeds follow it
        self.total_steps = cfg.ppo.iterations
        self.frozen_start: Optional[Metrics] = None
        self.reward_pool = None  # ppo.reward_workers: the reward functions' Ray actors

    # ------------------------------------------------------------------ set-up
    def start(self) -> None:
        from rlhf_dist.workers.cluster import cpus_needed
        from rlhf_dist.workers.env_pool import env_pool

        cfg = self.cfg
        seed_everything(cfg.seed)
        # the reference loads ref_model in its group or in the actor's processes; the
        # tokenizer is the policy's (model.tokenizer_path, read next)
        self.check_model_paths(
            ["model"]
            + (["ref_model"] if not cfg.shared_reference else [])
            + (["critic_model"] if cfg.ppo.needs_critic else [])
        )
        if cfg.ppo.use_reward_model:  # and its head: a frozen RM with a fresh head is noise
            from rlhf_dist.models.scalar_loader import check_reward_source

            check_reward_source(cfg.reward_model)
        self.tokenizer = load_tokenizer(cfg.model, field_prefix="model")
        self.prompts = build_prompt_dataset(cfg.data, self.tokenizer, split="train")
        self.collate = PromptCollator(self.tokenizer.pad_token_id)
        self.rollout = make_rollout(cfg, self.tokenizer, env_pool(cfg.env))
        self.start_ray(cpus_needed(cfg, ppo_roles(cfg), self.rollout))
        self.rollout.check()

    def build(self) -> None:
        """The groups and the driver's own trained state (the KL controller), fresh."""
        from rlhf_dist.rollout import RewardShaper
        from rlhf_dist.workers.cluster import create_roles
        from rlhf_dist.workers.role_groups import wait_all

        cfg = self.cfg
        self.shaper, self.timer, self.drawn = RewardShaper(cfg.ppo), Timer(), 0
        self.roles = create_roles(
            cfg,
            with_reward=cfg.ppo.use_reward_model,
            with_critic=cfg.ppo.needs_critic,
            rollout=self.rollout,
        )
        total = self.sizes.total_steps
        builds = [
            self.roles.actor.build(
                learner_train_section(cfg, cfg.train.lr, cfg.resources.actor.world_size), total
            )
        ]
        if self.roles.reference:
            builds.append(self.roles.reference.build())
        elif cfg.shared_reference:
            log.info(
                "resources/reference=shared_base: the reference log-probs come from the "
                "actor with its LoRA adapter disabled (no reference group)"
            )
        else:
            log.info(
                "resources/reference=in_actor: the reference log-probs come from a frozen "
                "engine in the actor's processes (no reference group)"
            )
        if self.roles.reward:
            builds.append(self.roles.reward.build())
        if self.roles.critic:
            builds.append(
                self.roles.critic.build(
                    learner_train_section(cfg, cfg.ppo.critic_lr, cfg.resources.critic.world_size),
                    total,
                )
            )
        wait_all(builds)
        self.connect_rollout()

    # ------------------------------------------------------------------ loop
    def train_step(self) -> Metrics:
        return self.iterate()

    def iterate(self) -> Metrics:
        sync = self.rollout.sync_weights(self.step)
        with self.timer("generate"):
            experience, rollout_metrics = self.sample()
        with self.timer("score"):
            experience, score_metrics = self.score(experience)
        try:
            check_experience(experience)
        except NonFiniteError:
            self.timer.pop()  # a skipped iteration's phases are not the next one's
            raise
        experience, truncation = self.mask_truncated(experience)
        truncation.update(self.staleness(experience))
        with self.timer("learn"):
            learn_metrics = self.learn(experience)
        self.shaper.update_kl(score_metrics["kl/ref_kl"], len(experience))
        tokens = float(experience["attention_mask"].sum())
        timings = self.timer.pop()
        elapsed = sum(timings.values()) + sum(sync.values())
        return {
            **rollout_metrics,
            **sync,
            **score_metrics,
            **truncation,
            **learn_metrics,
            **timings,
            **self.roles.offload_metrics(self.cfg.resources),
            "perf/tokens_per_s": tokens / max(elapsed, 1e-9),
        }

    def sample(self) -> Tuple[Batch, Metrics]:
        """One prompt batch's experience, or with ``ppo.dynamic_sampling`` as many as it
        takes (at most 1 + ``ppo.dynamic_sampling_extra_rounds``) to find
        ``rollout_batch_size`` prompts whose responses' rewards differ; those rows come
        with their ``scores`` already.  ``dynamic/`` metrics: rounds, the informative
        fraction of the prompts generated, and how many uninformative ones filled the batch."""
        from rlhf_dist.algo import informative_groups
        from rlhf_dist.rollout.dynamic import choose_groups, gather_groups

        ppo, want = self.cfg.ppo, self.cfg.rollout.rollout_batch_size
        if not ppo.dynamic_sampling:
            return self.generate()
        rounds, rows, informative, metrics = [], [], [], {}
        while len(rounds) <= ppo.dynamic_sampling_extra_rounds:
            if rounds:  # the weights are the same; a backend that slept wakes up
                self.rollout.sync_weights(self.step)
            experience, round_metrics = self.generate()
            metrics = metrics or round_metrics
            rounds.append(experience.with_(scores=self.sequence_rewards(experience)))
            rows.append(self.rows)
            informative.append(informative_groups(rounds[-1]["scores"], self.n_samples))
            if int(sum(m.sum() for m in informative)) >= want:
                break
        chosen, filled = choose_groups(informative, want)
        self.rows = [rows[r][g] for r, g in chosen]
        generated = sum(len(m) for m in informative)
        return gather_groups(rounds, chosen, self.n_samples, self.tokenizer.pad_token_id), {
            **metrics,
            "dynamic/rounds": float(len(rounds)),
            "dynamic/informative_frac": float(sum(m.sum() for m in informative)) / generated,
            "dynamic/filled_uninformative": float(filled),
        }

    def score(self, experience: Batch):
        """Reference log-probs, RM scores and values, computed concurrently on their groups,
        the sequence rewards (unless the experience has its ``scores`` already), then the
        token rewards and advantages."""
        roles = self.roles
        pending = {"ref_logprobs": roles.reference_calls().logprobs(experience)}
        rm_scores = None
        if roles.reward and "scores" not in experience:
            rm_scores = roles.reward.score(experience)
        if roles.critic:
            pending["values"] = roles.critic.values(experience)
        fields = {key: p.result() for key, p in pending.items()}
        if "scores" not in experience:
            fields["scores"] = self.sequence_rewards(experience, rm_scores)
        experience = experience.with_(**fields)
        from rlhf_dist.rollout import compute_advantages

        experience, metrics = self.shaper(experience)
        experience, adv_metrics = compute_advantages(experience, self.cfg.ppo, self.n_samples)
        if self.cfg.ppo.overlong_buffer:
            metrics["reward/overlong_penalty_mean"] = float(
                self.overlong_penalties(experience).mean()
            )
        return experience, {**metrics, **adv_metrics}

    def mask_truncated(self, experience: Batch) -> Tuple[Batch, Metrics]:
        """``response/truncated_frac``; with ``ppo.mask_truncated`` the truncated responses'
        actions are masked out of the losses (after scoring: rewards and groups unchanged)."""
        from rlhf_dist.rollout import stop_ids, truncated_rows

        truncated = (
            experience["truncated"]
            if "truncated" in experience
            else truncated_rows(experience, stop_ids(self.cfg.rollout, self.tokenizer))
        )
        metrics = {"response/truncated_frac": float(truncated.float().mean())}
        if not self.cfg.ppo.mask_truncated:
            return experience, metrics
        keep = (~truncated).to(experience["action_mask"].dtype)[:, None]
        return experience.with_(action_mask=experience["action_mask"] * keep), metrics

    def learn(self, experience: Batch) -> Metrics:
        """``ppo.ppo_epochs`` passes of minibatch updates, stopped after an epoch whose mean
        ``actor/approx_kl`` passes ``ppo.target_kl``.  Each learner group gets its share of
        the experience once; actor and critic run each epoch at the same time, one call
        per rank."""
        from rlhf_dist.algo import explained_variance
        from rlhf_dist.workers.role_groups import wait_all

        ppo, rows = self.cfg.ppo, []
        plan = (experience, ppo.mini_batch_size, ppo.ppo_epochs, self.cfg.seed + self.step)
        learners = [self.roles.actor.ppo_learner(*plan)]
        if self.roles.critic:
            learners.append(self.roles.critic.value_learner(*plan))
        for epoch in range(ppo.ppo_epochs):
            pending = [learner.epoch(epoch) for learner in learners]
            # per minibatch, the actor's and the critic's metrics side by side
            epoch_rows = [
                {k: v for row in rows_of_step for k, v in row.items()}
                for rows_of_step in zip(*wait_all(pending))
            ]
            rows += epoch_rows
            if past_target_kl(epoch_rows, ppo.target_kl):
                break
        metrics = mean_rows(rows)
        metrics["actor/epochs"] = len(rows) / len(epoch_rows)
        if "values" in experience:
            metrics["critic/explained_var"] = explained_variance(
                experience["values"], experience["returns"], experience["action_mask"]
            )
        return metrics

    # ------------------------------------------------------------------ state
    def driver_state(self) -> Dict[str, Any]:
        return {
            "iteration": self.step,
            "reward_shaping": self.shaper.state_dict(),
            "prompt_batches": self.drawn,
        }

    def load_driver_state(self, state: Dict[str, Any]) -> None:
        # "scorer": the key of checkpoints written before the RewardShaper had its name
        self.shaper.load_state_dict(state.get("reward_shaping", state.get("scorer")))
        self.drawn = state.get("prompt_batches", state["iteration"])

    def export(self) -> None:
        self.roles.actor.export_hf(str(self.out / "model"))
        if self.roles.critic:
            self.roles.critic.export_hf(str(self.out / "critic"))


def run(cfg: Config):
    return PPOTrainer(cfg).fit()

"""PPO on Ray: a single-controller driver over the actor, reference, reward and critic groups.

Per iteration: generate → score (reference, reward and critic forwards run concurrently) →
advantages → learn (``ppo_epochs`` over shuffled minibatches) → metrics → checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from rlhf_dist.algo.finite import NonFiniteError, check_finite
from rlhf_dist.config import Config, TrainConfig, ppo_roles
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.async_rollout import check_staleness
from rlhf_dist.rollout.factory import make_rollout
from rlhf_dist.trainers import batches as B
from rlhf_dist.trainers.ray_job import RayJob
from rlhf_dist.utils import Timer, mean_rows, seed_everything
from rlhf_dist.utils.seeding import SAMPLING, derive_seed

log = logging.getLogger(__name__)
Metrics = Dict[str, float]
PENDING_FILE = "rollout_pending.pt"  # a checkpoint's experience sampled ahead (async)


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
    train = dataclasses.replace(cfg.train, lr=lr, train_batch_size=cfg.ppo.mini_batch_size,
                                gradient_accumulation_steps=None, lr_scheduler="constant",
                                warmup_ratio=0.0)
    train.resolve_accumulation(world_size)
    return train


class PPOTrainer(RayJob):
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
        from rlhf_dist.data import PromptCollator, build_prompt_dataset
        from rlhf_dist.models import load_tokenizer
        from rlhf_dist.workers.cluster import cpus_needed

        cfg = self.cfg
        seed_everything(cfg.seed)
        # the reference loads ref_model in its group or in the actor's processes; the
        # tokenizer is the policy's (model.tokenizer_path, read next)
        self.check_model_paths(["model"] + (["ref_model"] if not cfg.shared_reference else [])
                               + (["critic_model"] if cfg.ppo.needs_critic else []))
        if cfg.ppo.use_reward_model:  # and its head: a frozen RM with a fresh head is noise
            from rlhf_dist.models.scalar_loader import check_reward_source

            check_reward_source(cfg.reward_model)
        self.tokenizer = load_tokenizer(cfg.model, field_prefix="model")
        self.prompts = build_prompt_dataset(cfg.data, self.tokenizer, split="train")
        self.collate = PromptCollator(self.tokenizer.pad_token_id)
        self.rollout = make_rollout(cfg, self.tokenizer)
        self.start_ray(cpus_needed(cfg, ppo_roles(cfg), self.rollout))
        self.rollout.check()

    def build(self) -> None:
        """The groups and the driver's own trained state (the KL controller), fresh."""
        from rlhf_dist.rollout import RewardShaper
        from rlhf_dist.workers.cluster import create_roles

        cfg = self.cfg
        self.shaper, self.timer, self.drawn = RewardShaper(cfg.ppo), Timer(), 0
        self.roles = create_roles(cfg, with_reward=cfg.ppo.use_reward_model,
                                  with_critic=cfg.ppo.needs_critic, rollout=self.rollout)
        total = self.sizes.total_steps
        self.roles.actor.build(
            learner_train_section(cfg, cfg.train.lr, cfg.resources.actor.world_size), total)
        if self.roles.reference:
            self.roles.reference.build()
        elif cfg.shared_reference:
            log.info("resources/reference=shared_base: the reference log-probs come from the "
                     "actor with its LoRA adapter disabled (no reference group)")
        else:
            log.info("resources/reference=in_actor: the reference log-probs come from a frozen "
                     "engine in the actor's processes (no reference group)")
        if self.roles.reward:
            self.roles.reward.build()
        if self.roles.critic:
            self.roles.critic.build(
                learner_train_section(cfg, cfg.ppo.critic_lr, cfg.resources.critic.world_size),
                total)
        self.rollout.connect()
        if cfg.ppo.reward_workers:
            from rlhf_dist.workers.reward_pool import RewardPool

            self.reward_pool = RewardPool(cfg.ppo, cfg.data.label_key)
        if self.frozen_start is None:
            self.frozen_start = self.frozen_checksums()

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
        return {**rollout_metrics, **sync, **score_metrics, **truncation, **learn_metrics,
                **timings,
                **self.roles.offload_metrics(self.cfg.resources),
                "perf/tokens_per_s": tokens / max(elapsed, 1e-9)}

    def prompt_batch(self) -> Tuple[Batch, int]:
        """The next batch of prompts, once each (the actor samples ``n_samples_per_prompt``
        responses per prompt), and its sampling seed; both depend only on (seed, number of
        batches drawn before), so resume is exact.  ``self.rows`` becomes its rows."""
        size = self.cfg.rollout.rollout_batch_size
        per_epoch = len(self.prompts) // size
        epoch, index = divmod(self.drawn, per_epoch)
        order = B.epoch_order(len(self.prompts), self.cfg.seed, epoch)
        self.rows = [self.prompts[i] for i in order[index * size:(index + 1) * size]]
        seed = derive_seed(self.cfg.seed, self.drawn, SAMPLING)
        self.drawn += 1
        batch = Batch.from_dict(self.collate(self.rows)).select(["input_ids", "attention_mask"])
        return batch, seed

    def draw(self) -> Tuple[Batch, int, List[dict]]:
        """The next prompt batch, its seed and rows (:meth:`prompt_batch`)."""
        prompts, seed = self.prompt_batch()
        return prompts, seed, self.rows

    def generate(self) -> Tuple[Batch, Metrics]:
        """The experience of the next prompt batch, with the behaviour log-probs
        ``old_logprobs``, from the rollout backend (:mod:`rlhf_dist.rollout.interface`; an
        asynchronous one drew it ahead); ``self.rows`` becomes its prompt rows."""
        self.rows, experience, metrics = self.rollout.next_batch(self.draw, self.step)
        return experience, metrics

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
            **metrics, "dynamic/rounds": float(len(rounds)),
            "dynamic/informative_frac": float(sum(m.sum() for m in informative)) / generated,
            "dynamic/filled_uninformative": float(filled)}

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
                self.overlong_penalties(experience).mean())
        return experience, {**metrics, **adv_metrics}

    def sequence_rewards(self, experience: Batch, rm_scores=None) -> torch.Tensor:
        """(N,) sequence rewards: the RM's score (``rm_scores``, a pending reward-group call,
        started here when not given) + the reward functions + the overlong penalty + what
        the rollout observed itself (``rollout_scores``: an environment's rewards)."""
        if rm_scores is None and self.roles.reward:
            rm_scores = self.roles.reward.score(experience)
        scores = torch.zeros(len(experience)) if rm_scores is None else rm_scores.result()
        if "rollout_scores" in experience:
            scores = scores + experience["rollout_scores"]
        return scores + self.custom_rewards(experience) + self.overlong_penalties(experience)

    def mask_truncated(self, experience: Batch) -> Tuple[Batch, Metrics]:
        """``response/truncated_frac``; with ``ppo.mask_truncated`` the truncated responses'
        actions are masked out of the losses (after scoring: rewards and groups unchanged)."""
        from rlhf_dist.rollout import stop_ids, truncated_rows

        truncated = experience["truncated"] if "truncated" in experience else \
            truncated_rows(experience, stop_ids(self.cfg.rollout, self.tokenizer))
        metrics = {"response/truncated_frac": float(truncated.float().mean())}
        if not self.cfg.ppo.mask_truncated:
            return experience, metrics
        keep = (~truncated).to(experience["action_mask"].dtype)[:, None]
        return experience.with_(action_mask=experience["action_mask"] * keep), metrics

    def staleness(self, experience: Batch) -> Metrics:
        """``async/staleness_*`` of rows sampled ahead (their ``versions``); a row older than
        ``rollout.max_staleness`` versions is refused, naming the versions."""
        if "versions" not in experience:
            return {}
        return check_staleness(experience["versions"], self.step,
                               self.cfg.rollout.max_staleness)

    def overlong_penalties(self, experience: Batch) -> torch.Tensor:
        """DAPO's soft overlong punishment of each response (``ppo.overlong_buffer``)."""
        ppo = self.cfg.ppo
        if not ppo.overlong_buffer:
            return torch.zeros(len(experience))
        from rlhf_dist.algo import overlong_penalty

        lengths = experience["action_mask"].sum(-1)
        return overlong_penalty(lengths, self.cfg.rollout.max_new_tokens, ppo.overlong_buffer,
                                ppo.overlong_penalty)

    def custom_rewards(self, experience: Batch) -> torch.Tensor:
        """The reward functions' weighted sum; experience rows are the iteration's prompts in
        order, ``n_samples_per_prompt`` consecutive rows each, so row i has prompt i // n's
        label and extras."""
        if not self.rewards:
            return torch.zeros(len(experience))
        from rlhf_dist.rollout import decode_prompts, decode_responses

        rows = [self.rows[i // self.n_samples] for i in range(len(experience))]
        rewards = self.reward_pool or self.rewards
        return rewards(decode_prompts(experience, self.tokenizer),
                            decode_responses(experience, self.tokenizer),
                            [row.get("label") for row in rows],
                            [row.get("extras", {}) for row in rows])

    def learn(self, experience: Batch) -> Metrics:
        """``ppo.ppo_epochs`` passes of minibatch updates, stopped after an epoch whose mean
        ``actor/approx_kl`` passes ``ppo.target_kl``.  Each learner group gets its share of
        the experience once; actor and critic run each epoch at the same time, one call
        per rank."""
        from rlhf_dist.algo import explained_variance

        ppo, rows = self.cfg.ppo, []
        plan = (experience, ppo.mini_batch_size, ppo.ppo_epochs, self.cfg.seed + self.step)
        learners = [self.roles.actor.ppo_learner(*plan)]
        if self.roles.critic:
            learners.append(self.roles.critic.value_learner(*plan))
        for epoch in range(ppo.ppo_epochs):
            pending = [learner.epoch(epoch) for learner in learners]
            # per minibatch, the actor's and the critic's metrics side by side
            epoch_rows = [{k: v for row in rows_of_step for k, v in row.items()}
                          for rows_of_step in zip(*(p.result() for p in pending))]
            rows += epoch_rows
            if past_target_kl(epoch_rows, ppo.target_kl):
                break
        metrics = mean_rows(rows)
        metrics["actor/epochs"] = len(rows) / len(epoch_rows)
        if "values" in experience:
            metrics["critic/explained_var"] = explained_variance(
                experience["values"], experience["returns"], experience["action_mask"])
        return metrics

    # ------------------------------------------------------------------ state
    def driver_state(self) -> Dict[str, Any]:
        return {"iteration": self.step, "reward_shaping": self.shaper.state_dict(),
                "prompt_batches": self.drawn}

    def save_to(self, staging: Path) -> Dict[str, Any]:
        """Plus the experience sampled ahead and not yet trained on (async), if any."""
        state = super().save_to(staging)
        pending = self.rollout.pending_state()
        if pending:
            torch.save(pending, staging / PENDING_FILE)
        return state

    def load_from(self, path: Path, state: Dict[str, Any]) -> None:
        super().load_from(path, state)
        pending = path / PENDING_FILE
        self.rollout.restore_pending(torch.load(pending, weights_only=False)
                                     if pending.exists() else [])

    def load_driver_state(self, state: Dict[str, Any]) -> None:
        # "scorer": the key of checkpoints written before the RewardShaper had its name
        self.shaper.load_state_dict(state.get("reward_shaping", state.get("scorer")))
        self.drawn = state.get("prompt_batches", state["iteration"])

    def teardown(self) -> None:
        super().teardown()
        if self.reward_pool:
            self.reward_pool.kill()

    def frozen_checksums(self) -> Metrics:
        """CRC32 of the frozen models' full weights: must not change during training."""
        groups = {"reference": self.roles.reference_calls(), "reward": self.roles.reward}
        return {name: group.state_checksum() for name, group in groups.items() if group}

    def end_metrics(self) -> Metrics:
        end = self.frozen_checksums()
        moved = [k for k in end if end[k] != self.frozen_start[k]]
        if moved:
            log.warning("frozen models changed during PPO: %s", moved)
        return {**{f"frozen/{k}_checksum_start": v for k, v in self.frozen_start.items()},
                **{f"frozen/{k}_checksum_end": v for k, v in end.items()}}

    def export(self) -> None:
        self.roles.actor.export_hf(str(self.out / "model"))
        if self.roles.critic:
            self.roles.critic.export_hf(str(self.out / "critic"))


def run(cfg: Config):
    return PPOTrainer(cfg).fit()

"""What the Ray drivers that sample from the actor share (PPO/GRPO, online DPO): the prompts,
drawn in a seeded order that a resume repeats; the rollout backend's experience; the scorers
(the reward group's RM, the reward functions -- on the driver or in their pool of Ray actors --,
the served RM, the overlong penalty, an environment's rewards); the experience sampled ahead
saved with a checkpoint; and the frozen models' checksums.

A subclass sets, before these are used: ``cfg``, ``tokenizer``, ``prompts`` (a prompt dataset),
``collate`` (a ``PromptCollator``), ``rollout``, ``rewards`` (``rewards.load_rewards``),
``reward_pool`` (or None), ``n_samples``, ``rows``, ``drawn``, ``roles`` and ``frozen_start``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.async_rollout import check_staleness
from rlhf_dist.trainers import batches as B
from rlhf_dist.trainers.ray_job import RayJob
from rlhf_dist.utils.seeding import SAMPLING, derive_seed

log = logging.getLogger(__name__)
Metrics = Dict[str, float]
PENDING_FILE = "rollout_pending.pt"  # a checkpoint's experience sampled ahead (async)


class RolloutJob(RayJob):
    """A Ray job whose actor samples answers to prompts, which scorers rate (see the module)."""

    def prompt_batch(self) -> Tuple[Batch, int]:
        """The next batch of prompts, once each (the actor samples ``n_samples_per_prompt``
        responses per prompt), and its sampling seed; both depend only on (seed, number of
        batches drawn before), so resume is exact.  ``self.rows`` becomes its rows."""
        size = self.cfg.rollout.rollout_batch_size
        per_epoch = len(self.prompts) // size
        epoch, index = divmod(self.drawn, per_epoch)
        order = B.epoch_order(len(self.prompts), self.cfg.seed, epoch)
        self.rows = [self.prompts[i] for i in order[index * size : (index + 1) * size]]
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

    def overlong_penalties(self, experience: Batch) -> torch.Tensor:
        """DAPO's soft overlong punishment of each response (``ppo.overlong_buffer``)."""
        ppo = self.cfg.ppo
        if not ppo.overlong_buffer:
            return torch.zeros(len(experience))
        from rlhf_dist.algo import overlong_penalty

        lengths = experience["action_mask"].sum(-1)
        return overlong_penalty(
            lengths, self.cfg.rollout.max_new_tokens, ppo.overlong_buffer, ppo.overlong_penalty
        )

    def custom_rewards(self, experience: Batch) -> torch.Tensor:
        """The reward functions' weighted sum; experience rows are the iteration's prompts in
        order, ``n_samples_per_prompt`` consecutive rows each, so row i has prompt i // n's
        label and extras."""
        if not self.rewards:
            return torch.zeros(len(experience))
        from rlhf_dist.rollout import decode_prompts, decode_responses

        rows = [self.rows[i // self.n_samples] for i in range(len(experience))]
        rewards = self.reward_pool or self.rewards
        return rewards(
            decode_prompts(experience, self.tokenizer),
            decode_responses(experience, self.tokenizer),
            [row.get("label") for row in rows],
            [row.get("extras", {}) for row in rows],
        )

    def staleness(self, experience: Batch) -> Metrics:
        """``async/staleness_*`` of rows sampled ahead (their ``versions``); a row older than
        ``rollout.max_staleness`` versions is refused, naming the versions."""
        if "versions" not in experience:
            return {}
        return check_staleness(experience["versions"], self.step, self.cfg.rollout.max_staleness)

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
        self.rollout.restore_pending(
            torch.load(pending, weights_only=False) if pending.exists() else []
        )

    def connect_rollout(self) -> None:
        """The end of ``build()``, once the groups are built: the rollout backend connected
        (weight group), the reward-function pool (``ppo.reward_workers``) and the frozen
        models' start checksums (first build only)."""
        self.rollout.connect()
        if self.cfg.ppo.reward_workers:
            from rlhf_dist.workers.reward_pool import RewardPool

            self.reward_pool = RewardPool(self.cfg.ppo, self.cfg.data.label_key)
        if self.frozen_start is None:
            self.frozen_start = self.frozen_checksums()

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
            log.warning("frozen models changed during %s: %s", self.job, moved)
        return {
            **{f"frozen/{k}_checksum_start": v for k, v in self.frozen_start.items()},
            **{f"frozen/{k}_checksum_end": v for k, v in end.items()},
        }

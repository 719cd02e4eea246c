"""The ``vllm`` rollout backend of the PPO driver: vLLM engines in Ray actors of their own
(:class:`~rlhf_dist.workers.rollout_engines.RolloutEngines`), or sharing the actor's devices
(``resources.colocate_rollout``: asleep while the learners train).

Per generation: the actor's weights are streamed into the engines when they changed since the
last sync (colocated engines: woken, synced, and put back to sleep after sampling); the
engines sample; the actor recomputes the behaviour log-probs of the sampled tokens (exact
under its own arithmetic), next to vLLM's own (``rollout/logprob_abs_diff_*``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from rlhf_dist.algo.importance import importance_stats
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.interface import Metrics, Rollout
from rlhf_dist.rollout.vllm_sampler import check_vllm_model, make_vllm_sampler


def logprob_gap(experience: Batch) -> Metrics:
    """``rollout/logprob_abs_diff_{mean,max}``: |actor − vLLM| log-prob of the sampled tokens
    over response tokens -- near 0 when the weight sync and the arithmetic agree."""
    mask = experience["action_mask"].bool()
    gap = (experience["old_logprobs"] - experience["engine_logprobs"]).abs()[mask]
    return {
        "rollout/logprob_abs_diff_mean": float(gap.mean()) if gap.numel() else 0.0,
        "rollout/logprob_abs_diff_max": float(gap.max()) if gap.numel() else 0.0,
    }


class VLLMRollout(Rollout):
    """``rollout.backend=vllm`` (``resources.rollout``: the engines' layout)."""

    sampler_needs_model = False
    runs_ahead = True
    check_sampler = staticmethod(check_vllm_model)
    make_sampler = staticmethod(make_vllm_sampler)

    def __init__(self, cfg: Any, tokenizer: Any):
        super().__init__(cfg, tokenizer)
        self.colocated = cfg.resources.colocate_rollout
        self.engines: Any = None
        self.engine_model: Any = None
        self.synced: Optional[int] = None  # the version the engines hold (None: none yet)

    def cpus(self) -> float:
        res = self.cfg.resources
        return 0.0 if self.colocated else res.rollout.world_size * res.rollout.cpus_per_worker

    def check(self) -> None:
        from rlhf_dist.rollout.vllm_preflight import preflight
        from rlhf_dist.workers.worker_group import device_per_worker

        self.engine_model = preflight(self.cfg, self.tokenizer, device_per_worker() == "GPU")

    def bundles(self) -> List[Dict[str, float]]:
        from rlhf_dist.workers.rollout_engines import engine_bundles

        return [] if self.colocated else engine_bundles(self.cfg)

    def actor_share(self) -> float:
        from rlhf_dist.workers.rollout_engines import COLOCATED_SHARE

        return COLOCATED_SHARE if self.colocated else 0.0

    def start(self, actor: Any, placement: Any) -> None:
        from rlhf_dist.workers.rollout_engines import RolloutEngines

        super().start(actor, placement)
        self.synced = None
        self.engines = RolloutEngines(self.cfg, self.engine_model, placement)
        if self.colocated:
            self.engines.sleep()  # created awake: the device is the learners' until a sync

    def connect(self) -> None:
        self.engines.connect(self.actor)

    def sync_weights(self, version: int) -> Metrics:
        """Colocated engines sleep between generations (their weights discarded): woken and
        synced before each; others are synced when the actor moved on since."""
        if self.colocated:
            seconds = self.engines.sync_colocated(self.actor, version)
        elif self.synced == version:
            return {}
        else:
            seconds = self.engines.sync_from(self.actor, version)
        self.synced = version
        return {"perf/weight_sync_s": seconds}

    def produce(self, prompts: Batch, seed: int, rows: Sequence[dict]) -> Tuple[Batch, Metrics]:
        experience = self.engines.generate(prompts, seed, self.pad_token_id)
        self.release()
        return experience, {}

    def finish(self, experience: Batch) -> Tuple[Batch, Metrics]:
        """The actor's behaviour log-probs next to vLLM's (``rollout/logprob_abs_diff_*``;
        with importance weights also their statistics, ``rollout/tis_*``)."""
        rollout = self.cfg.rollout
        experience = self.with_behaviour_logprobs(experience)
        metrics = logprob_gap(experience)
        if not rollout.importance_weights:  # only the importance weights need them later
            return experience.drop(["engine_logprobs"]), metrics
        stats = importance_stats(
            experience["old_logprobs"],
            experience["engine_logprobs"],
            experience["action_mask"],
            rollout.tis_cap,
            rollout.tis_mode,
        )
        return experience, {**metrics, **{f"rollout/{k}": v for k, v in stats.items()}}

    def sample(self, prompts: Batch, seed: int, n: int) -> Batch:
        return self.engines.generate(prompts, seed, self.pad_token_id, n)

    def release(self) -> None:
        if self.colocated:
            self.engines.sleep()  # the device is the actor's until the next sync

    def kill(self) -> None:
        if self.engines is not None:
            self.engines.kill()


__all__ = ["VLLMRollout", "logprob_gap"]

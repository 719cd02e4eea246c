"""The four role actors.  Thin: each holds one ModelEngine and calls rollout/ and algo/.

Tensor alignment (B rows, T tokens): ``sequences``/``attention_mask`` are (B, T);
log-probs, values, rewards, advantages and ``action_mask`` are (B, T−1), position t scoring
token t+1 (the critic's value at t is the value of the state that emits token t+1).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from rlhf_dist.config import Config, ModelConfig, TrainConfig
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.models import load_causal_lm
from rlhf_dist.models.lora import maybe_lora
from rlhf_dist.protocol import Batch
from rlhf_dist.workers.actor_parts import Generation, InActorReference, PolicyLearner, WeightSender
from rlhf_dist.workers.model_worker import Metrics, ModelWorker, seeded_build, uses_engine
from rlhf_dist.workers.steps import (
    epoch_updates,
    in_micro_batches,
    reference_logprobs,
    reference_sequence_logps,
)


def _reference_engine(cfg: Config, tokenizer, world_size: int) -> ModelEngine:
    """The frozen reference: ``ref_model`` when it names weights, else the policy's own
    initial weights (``model``), built with the policy's seed."""
    section, prefix = (
        (cfg.ref_model, "ref_model") if cfg.ref_model.name_or_path else (cfg.model, "model")
    )
    build = seeded_build(cfg.seed, lambda: load_causal_lm(section, tokenizer, field_prefix=prefix))
    return ModelEngine.frozen(
        build, cfg.deepspeed.for_role("reference"), cfg.train.micro_batch_size, world_size
    )


class ActorWorker(ModelWorker):
    """The policy's rank: the Ray entry points of its parts (:mod:`~rlhf_dist.workers.
    actor_parts`), each call with the engines on the device (``uses_engine``)."""

    role = "actor"

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.reference: Optional[InActorReference] = None  # and the other parts: build()

    @uses_engine
    def build(self, train: TrainConfig, total_steps: int) -> None:
        cfg = self.cfg
        build = seeded_build(
            cfg.seed,
            lambda: maybe_lora(
                load_causal_lm(cfg.model, self.tokenizer(), field_prefix="model"),
                cfg.model,
                "model",
            ),
        )
        self.engine = ModelEngine.trained(
            build, cfg.deepspeed.for_role("actor"), train, self.world_size, total_steps
        )
        self.learner = PolicyLearner(cfg, self.engine)
        self.generation = Generation(cfg, self.learner, self.tokenizer())
        self.weights = WeightSender(cfg, self.engine, self.rank)
        self.reference = InActorReference.build(
            cfg, self.engine, lambda: _reference_engine(cfg, self.tokenizer(), self.world_size)
        )

    def _engines(self) -> List[ModelEngine]:
        return super()._engines() + (self.reference.engines() if self.reference else [])

    @uses_engine
    @torch.no_grad()
    def generate(
        self, prompts: Batch, seed: int, n: Optional[int] = None, logprobs: bool = True
    ) -> Batch:
        return self.generation.generate(prompts, seed + self.rank, n, logprobs)

    @uses_engine
    @torch.no_grad()
    def logprobs(self, batch: Batch) -> Batch:
        return self.learner.logprobs(batch)

    @uses_engine
    def ppo_epoch(self, share: Batch, minibatches: List[torch.Tensor]) -> List[Metrics]:
        return self.learner.ppo_epoch(share, minibatches)

    @uses_engine
    def dpo_update(self, micro_batches: List[Batch]) -> Metrics:
        return self.learner.dpo_update(micro_batches)

    @uses_engine
    @torch.no_grad()
    def dpo_eval(self, micro_batches: List[Batch]) -> Metrics:
        return self.learner.dpo_eval(micro_batches)

    # ---------------------------------------------------------- weight sync (vLLM engines)
    def open_weight_group(self) -> Tuple[str, int]:
        import ray

        return self.weights.open(ray.util.get_node_ip_address())

    def join_weight_group(self, world_size: int, backend: str) -> None:
        self.weights.join(world_size, backend)

    def weight_specs(self) -> List[Tuple[str, str, List[int]]]:
        return self.weights.specs()

    def broadcast_weights(self) -> None:
        self.weights.broadcast(self.engine_in_use)

    def release_device_cache(self) -> None:
        from rlhf_dist.engine.offload import empty_device_cache

        empty_device_cache()

    # ------------------------------------- the reference in this process (InActorReference)
    @uses_engine
    @torch.no_grad()
    def reference_logprobs(self, batch: Batch) -> Batch:
        return self.reference.logprobs(batch)

    @uses_engine
    @torch.no_grad()
    def reference_sequence_logps(self, batch: Batch) -> Batch:
        return self.reference.sequence_logps(batch)

    @uses_engine
    def reference_checksum(self) -> float:
        return self.reference.checksum()


class ReferenceWorker(ModelWorker):
    """Frozen copy of the initial policy: log-probs only."""

    role = "reference"

    @uses_engine
    def build(self) -> None:
        self.engine = _reference_engine(self.cfg, self.tokenizer(), self.world_size)

    @uses_engine
    @torch.no_grad()
    def logprobs(self, batch: Batch) -> Batch:
        return reference_logprobs(self.cfg, self.engine, batch)

    @uses_engine
    @torch.no_grad()
    def sequence_logps(self, batch: Batch) -> Batch:
        """DPO: per-response log-probs of a preference batch, rows of its layout."""
        return reference_sequence_logps(self.cfg, self.engine, batch)


def _scalar_section(cfg: Config, role: str) -> Tuple[ModelConfig, str]:
    """The section a scalar role loads: the critic's own ``critic_model`` when it names weights,
    else the reward model's (a common init), else ``critic_model`` again -- a random model of
    ``critic_model.tiny`` (tests, the demo)."""
    if role == "reward":
        return cfg.reward_model, "reward_model"
    if cfg.critic_model.name_or_path:
        return cfg.critic_model, "critic_model"
    if cfg.reward_model.name_or_path:
        return cfg.reward_model, "reward_model"
    return cfg.critic_model, "critic_model"


class RewardWorker(ModelWorker):
    """Frozen reward model: one score per sequence, optionally normalised by its saved stats."""

    role = "reward"

    @uses_engine
    def build(self) -> None:
        from rlhf_dist.models import load_scalar_model

        section, prefix = _scalar_section(self.cfg, "reward")
        build = seeded_build(
            self.cfg.seed + 1,
            lambda: load_scalar_model(
                section, self.tokenizer(), role="reward", field_prefix=prefix
            ),
        )
        self.engine = ModelEngine.frozen(
            build,
            self.cfg.deepspeed.for_role("reward"),
            self.cfg.train.micro_batch_size,
            self.world_size,
        )

    @uses_engine
    @torch.no_grad()
    def score(self, batch: Batch) -> Batch:
        from rlhf_dist.algo import score_index

        pad = self.engine.module.config.pad_token_id

        def forward(micro: Batch) -> torch.Tensor:
            ids, mask = micro["sequences"], micro["attention_mask"]
            values = self.engine(ids, mask)
            return values.gather(-1, score_index(ids, mask, pad)[:, None])[:, 0]

        scores = in_micro_batches(batch, self.cfg.train.micro_batch_size, forward)
        if self.cfg.ppo.normalize_reward:
            mean, std = self.engine.module.score_stats
            if mean is None:
                raise ValueError(
                    "ppo.normalize_reward: the reward model has no saved score "
                    "statistics (train it with rm.save_score_stats=true)"
                )
            scores = (scores - mean) / std
        return Batch({"scores": scores})


class CriticWorker(ModelWorker):
    """Value network: per-token values and the clipped value-loss update."""

    role = "critic"

    @uses_engine
    def build(self, train: TrainConfig, total_steps: int) -> None:
        from rlhf_dist.models import load_scalar_model

        cfg = self.cfg
        section, prefix = _scalar_section(cfg, "critic")
        build = seeded_build(
            cfg.seed + 2,
            lambda: maybe_lora(
                load_scalar_model(section, self.tokenizer(), role="critic", field_prefix=prefix),
                cfg.critic_model,
                "critic_model",
            ),
        )
        self.engine = ModelEngine.trained(
            build, cfg.deepspeed.for_role("critic"), train, self.world_size, total_steps
        )

    def _values(self, batch: Batch) -> torch.Tensor:
        return self.engine(batch["sequences"], batch["attention_mask"])[:, :-1]

    @uses_engine
    @torch.no_grad()
    def values(self, batch: Batch) -> Batch:
        self.engine.eval()
        values = in_micro_batches(batch, self.cfg.train.micro_batch_size, self._values)
        return Batch({"values": values * batch["action_mask"]})

    def _value_loss(self, micro: Batch) -> Tuple[torch.Tensor, Metrics]:
        from rlhf_dist.objectives import value_objective

        return value_objective(
            self._values(micro), micro, self.cfg.ppo, horizon=self.cfg.rollout.max_new_tokens
        )

    @uses_engine
    def value_epoch(self, share: Batch, minibatches: List[torch.Tensor]) -> List[Metrics]:
        """The critic's steps of one PPO epoch (:func:`epoch_updates`)."""
        return epoch_updates(
            self.engine, share, minibatches, self.cfg.train.micro_batch_size, self._value_loss
        )

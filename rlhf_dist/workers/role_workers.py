"""The four role actors.  Thin: each holds one ModelEngine and calls rollout/ and algo/.

Tensor alignment (B rows, T tokens): ``sequences``/``attention_mask`` are (B, T);
log-probs, values, rewards, advantages and ``action_mask`` are (B, T−1), position t scoring
token t+1 (the critic's value at t is the value of the state that emits token t+1).
"""
from __future__ import annotations

import contextlib
from typing import List, Tuple

import torch

from rlhf_dist.config import Config, ModelConfig, TrainConfig
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.protocol import Batch
from rlhf_dist.workers.model_worker import Metrics, ModelWorker, seeded_build, uses_engine
from rlhf_dist.workers.steps import (epoch_updates, in_micro_batches, reference_logprobs,
                                     reference_sequence_logps, update_minibatch)


def _reference_engine(cfg: Config, tokenizer, world_size: int) -> ModelEngine:
    """The frozen reference: ``ref_model`` when it names weights, else the policy's own
    initial weights (``model``), built with the policy's seed."""
    from rlhf_dist.models import load_causal_lm

    section, prefix = (cfg.ref_model, "ref_model") if cfg.ref_model.name_or_path \
        else (cfg.model, "model")
    build = seeded_build(cfg.seed, lambda: load_causal_lm(section, tokenizer,
                                                          field_prefix=prefix))
    return ModelEngine.frozen(build, cfg.deepspeed.for_role("reference"),
                              cfg.train.micro_batch_size, world_size)


class ActorWorker(ModelWorker):
    """Policy: generation, log-probs, PPO update, DPO update."""

    role = "actor"

    @uses_engine
    def build(self, train: TrainConfig, total_steps: int) -> None:
        from rlhf_dist.models import load_causal_lm
        from rlhf_dist.rollout import RolloutEngine

        from rlhf_dist.models.lora import maybe_lora

        cfg = self.cfg
        build = seeded_build(cfg.seed, lambda: maybe_lora(
            load_causal_lm(cfg.model, self.tokenizer(), field_prefix="model"), cfg.model,
            "model"))
        self.engine = ModelEngine.trained(build, cfg.deepspeed.for_role("actor"), train,
                                          self.world_size, total_steps)
        self.rollout = RolloutEngine(self.engine.module, self.tokenizer(), cfg.rollout)
        if cfg.resources.reference_in_actor:
            self.reference_engine = _reference_engine(cfg, self.tokenizer(), self.world_size)

    def _engines(self) -> List[ModelEngine]:
        return super()._engines() + ([self.reference_engine]
                                     if hasattr(self, "reference_engine") else [])

    @uses_engine
    @torch.no_grad()
    def generate(self, prompts: Batch, seed: int) -> Batch:
        self.engine.eval()
        read = self.cfg.rollout.logprobs_from_generate
        with self.engine.gathered():
            experience = self.rollout.generate(prompts["input_ids"], prompts["attention_mask"],
                                               generator_seed=seed + self.rank,
                                               with_logprobs=read)
        if read:
            return experience
        return experience.with_(old_logprobs=self.logprobs(experience)["logprobs"])

    # ---------------------------------------------------------- weight sync (vLLM engines)
    def open_weight_group(self) -> Tuple[str, int]:
        """Rank 0: start the weight group's store (port picked by the OS) and return it."""
        import ray

        from rlhf_dist.engine.dist import group_store

        self._weight_store = group_store(ray.util.get_node_ip_address(), 0, True,
                                         self.cfg.resources.timeout_s)
        return ray.util.get_node_ip_address(), self._weight_store.port

    def join_weight_group(self, world_size: int, backend: str) -> None:
        """Rank 0: join as rank 0 of ``world_size`` (returns once every engine joined)."""
        from rlhf_dist.engine.dist import local_device, standalone_group

        self._weight_group = standalone_group(self._weight_store, 0, world_size, backend,
                                              self.cfg.resources.timeout_s,
                                              host=self._weight_store.host)
        # gloo sends CPU tensors, NCCL device ones; one broadcast: every engine is connected
        self._weight_device = local_device() if backend == "nccl" else torch.device("cpu")
        self._weight_group.broadcast(torch.zeros(1, device=self._weight_device), 0).wait()

    def weight_specs(self) -> List[Tuple[str, str, List[int]]]:
        """``(name, engine dtype, full shape)`` of every parameter, in sending order."""
        from rlhf_dist.workers.rollout_engines import engine_dtype

        dtype = engine_dtype(self.cfg)
        return [(name, dtype, shape) for name, shape in self.engine.parameter_shapes()]

    @torch.no_grad()
    def broadcast_weights(self) -> None:
        """Collective on the actor's ranks (ZeRO-3 gathers one parameter at a time); rank 0
        broadcasts each, in the engines' dtype, to the engines.

        An idle-offloaded engine whose parameters are whole on each rank (ZeRO ≤ 2) sends its
        CPU copies as they are when the group is gloo (colocated engines): its optimizer
        states are never brought back to the device the woken engines are using."""
        from rlhf_dist.workers.rollout_engines import engine_dtype

        dtype = getattr(torch, engine_dtype(self.cfg))
        in_place = (self.engine.offloaded and self.engine.zero_stage < 3
                    and self._weight_device.type == "cpu")
        with contextlib.nullcontext() if in_place else self.engine_in_use():
            for _, tensor in self.engine.full_parameters():
                if self.rank == 0:
                    sent = tensor.to(device=self._weight_device, dtype=dtype).contiguous()
                    self._weight_group.broadcast(sent, 0).wait()

    def release_device_cache(self) -> None:
        from rlhf_dist.engine.offload import empty_device_cache

        empty_device_cache()

    @uses_engine
    @torch.no_grad()
    def logprobs(self, batch: Batch) -> Batch:
        from rlhf_dist.models import action_logprobs

        self.engine.eval()
        temperature = self.rollout.temperature
        return Batch({"logprobs": in_micro_batches(
            batch, self.cfg.train.micro_batch_size,
            lambda m: action_logprobs(self.engine, m, temperature))})

    # ------- the reference in this process: its own frozen engine, or this one adapter off
    def _reference(self):
        """``resources.reference_in_actor``: the frozen engine built next to the policy;
        else (``Config.shared_reference``) this LoRA engine with its adapter disabled."""
        if hasattr(self, "reference_engine"):
            return self.reference_engine
        self.engine.eval()
        return self.engine.base()

    @uses_engine
    @torch.no_grad()
    def reference_logprobs(self, batch: Batch) -> Batch:
        return reference_logprobs(self.cfg, self._reference(), batch)

    @uses_engine
    @torch.no_grad()
    def reference_sequence_logps(self, batch: Batch) -> Batch:
        return reference_sequence_logps(self.cfg, self._reference(), batch)

    @uses_engine
    def reference_checksum(self) -> float:
        """Collective under ZeRO-3: CRC32 of the reference's full weights (the frozen engine's,
        or the LoRA engine's base)."""
        if hasattr(self, "reference_engine"):
            return self.reference_engine.state_checksum()
        return self.engine.state_checksum(base=True)

    def _policy_loss(self, micro: Batch) -> Tuple[torch.Tensor, Metrics]:
        from rlhf_dist.objectives import policy_objective

        rollout = self.cfg.rollout
        return policy_objective(self.engine, micro, self.rollout.temperature, self.cfg.ppo,
                                rollout.tis_cap if rollout.use_engine_logprobs else None,
                                horizon=rollout.max_new_tokens)

    @uses_engine
    def ppo_epoch(self, share: Batch, minibatches: List[torch.Tensor]) -> List[Metrics]:
        """The actor's steps of one PPO epoch (:func:`epoch_updates`)."""
        return epoch_updates(self.engine, share, minibatches, self.cfg.train.micro_batch_size,
                             self._policy_loss)

    @uses_engine
    def dpo_update(self, micro_batches: List[Batch]) -> Metrics:
        """One DPO optimiser step over this rank's micro-batches (reference log-probs
        included as ``ref_logps``): the launcher trainer's loss, unchanged."""
        from rlhf_dist.objectives import dpo_batch_loss

        def loss_fn(micro: Batch):
            return dpo_batch_loss(self.engine, micro, micro["ref_logps"], self.cfg.dpo)

        return update_minibatch(self.engine, micro_batches, loss_fn)

    @uses_engine
    @torch.no_grad()
    def dpo_eval(self, micro_batches: List[Batch]) -> Metrics:
        """Sums of the DPO eval metrics over this rank's micro-batches (``dpo_eval_sums``)."""
        from rlhf_dist.objectives import dpo_eval_sums

        self.engine.eval()
        sums: Metrics = {}
        for micro in micro_batches:
            for key, value in dpo_eval_sums(self.engine, micro, micro["ref_logps"],
                                            self.cfg.dpo).items():
                sums[key] = sums.get(key, 0.0) + value
        self.engine.train()
        return sums


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
        build = seeded_build(self.cfg.seed + 1, lambda: load_scalar_model(
            section, self.tokenizer(), role="reward", field_prefix=prefix))
        self.engine = ModelEngine.frozen(build, self.cfg.deepspeed.for_role("reward"),
                                         self.cfg.train.micro_batch_size, self.world_size)

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
                raise ValueError("ppo.normalize_reward: the reward model has no saved score "
                                 "statistics (train it with rm.save_score_stats=true)")
            scores = (scores - mean) / std
        return Batch({"scores": scores})


class CriticWorker(ModelWorker):
    """Value network: per-token values and the clipped value-loss update."""

    role = "critic"

    @uses_engine
    def build(self, train: TrainConfig, total_steps: int) -> None:
        from rlhf_dist.models import load_scalar_model

        from rlhf_dist.models.lora import maybe_lora

        cfg = self.cfg
        section, prefix = _scalar_section(cfg, "critic")
        build = seeded_build(cfg.seed + 2, lambda: maybe_lora(load_scalar_model(
            section, self.tokenizer(), role="critic", field_prefix=prefix), cfg.critic_model,
            "critic_model"))
        self.engine = ModelEngine.trained(build, cfg.deepspeed.for_role("critic"), train,
                                          self.world_size, total_steps)

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

        return value_objective(self._values(micro), micro, self.cfg.ppo,
                               horizon=self.cfg.rollout.max_new_tokens)

    @uses_engine
    def value_epoch(self, share: Batch, minibatches: List[torch.Tensor]) -> List[Metrics]:
        """The critic's steps of one PPO epoch (:func:`epoch_updates`)."""
        return epoch_updates(self.engine, share, minibatches, self.cfg.train.micro_batch_size,
                             self._value_loss)

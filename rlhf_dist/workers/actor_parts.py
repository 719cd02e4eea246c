"""The parts an actor rank is composed of, one job each, free of Ray (the Ray actor,
:class:`~rlhf_dist.workers.role_workers.ActorWorker`, builds them and forwards its remote
calls to them):

* :class:`PolicyLearner` -- the trained policy: behaviour log-probs, PPO epochs, DPO steps;
* :class:`Generation` -- HF ``generate`` on the policy's module (``rollout.backend=hf``);
* :class:`WeightSender` -- rank 0's side of the weight sync to the rollout engines;
* :class:`InActorReference` -- the reference answered in the actor's processes: a frozen
  engine of its own (``resources.reference_in_actor``) or the policy's base with its LoRA
  adapter off (``Config.shared_reference``); absent when the reference is a group.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any, Callable, ContextManager, Deque, List, Optional, Tuple

import torch

from rlhf_dist.config import Config
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.weight_buckets import (
    IN_FLIGHT,
    bucket_bytes,
    pack,
    plan_buckets,
    tensor_crc,
    total_bytes,
)
from rlhf_dist.workers.rollout_engines import engine_dtype
from rlhf_dist.workers.steps import (
    Metrics,
    epoch_updates,
    in_micro_batches,
    reference_logprobs,
    reference_sequence_logps,
    update_minibatch,
)


class PolicyLearner:
    """The policy's engine on this rank and what is computed or updated with it."""

    def __init__(self, cfg: Config, engine: ModelEngine):
        from rlhf_dist.rollout import sampling_temperature

        self.cfg, self.engine = cfg, engine
        self.temperature = sampling_temperature(cfg.rollout)

    def logprobs(self, batch: Batch) -> Batch:
        from rlhf_dist.models import action_logprobs

        self.engine.eval()
        return Batch(
            {
                "logprobs": in_micro_batches(
                    batch,
                    self.cfg.train.micro_batch_size,
                    lambda m: action_logprobs(self.engine, m, self.temperature),
                )
            }
        )

    def _policy_loss(self, micro: Batch) -> Tuple[torch.Tensor, Metrics]:
        from rlhf_dist.objectives import policy_objective

        rollout = self.cfg.rollout
        return policy_objective(
            self.engine,
            micro,
            self.temperature,
            self.cfg.ppo,
            rollout.tis_cap if rollout.importance_weights else None,
            horizon=rollout.max_new_tokens,
            tis_mode=rollout.tis_mode,
        )

    def ppo_epoch(self, share: Batch, minibatches: List[torch.Tensor]) -> List[Metrics]:
        """The actor's steps of one PPO epoch (:func:`epoch_updates`)."""
        return epoch_updates(
            self.engine, share, minibatches, self.cfg.train.micro_batch_size, self._policy_loss
        )

    def dpo_update(self, micro_batches: List[Batch]) -> Metrics:
        """One DPO optimiser step over this rank's micro-batches (reference log-probs
        included as ``ref_logps``): the launcher trainer's loss, unchanged."""
        from rlhf_dist.objectives import dpo_batch_loss

        def loss_fn(micro: Batch):
            return dpo_batch_loss(self.engine, micro, micro["ref_logps"], self.cfg.dpo)

        return update_minibatch(self.engine, micro_batches, loss_fn)

    def dpo_eval(self, micro_batches: List[Batch]) -> Metrics:
        """Sums of the DPO eval metrics over this rank's micro-batches (``dpo_eval_sums``)."""
        from rlhf_dist.objectives import dpo_eval_sums

        self.engine.eval()
        sums: Metrics = {}
        for micro in micro_batches:
            for key, value in dpo_eval_sums(
                self.engine, micro, micro["ref_logps"], self.cfg.dpo
            ).items():
                sums[key] = sums.get(key, 0.0) + value
        self.engine.train()
        return sums


class Generation:
    """HF ``generate`` on the policy's module (ZeRO-3 parameters gathered meanwhile); the
    behaviour log-probs read from generate's own forwards
    (``rollout.logprobs_from_generate``) or recomputed by the learner."""

    def __init__(self, cfg: Config, learner: PolicyLearner, tokenizer: Any):
        from rlhf_dist.rollout import HFGenerator

        self.learner, self.read = learner, cfg.rollout.logprobs_from_generate
        self.sampler = HFGenerator(learner.engine.module, tokenizer, cfg.rollout)

    def generate(
        self, prompts: Batch, seed: int, n: Optional[int] = None, logprobs: bool = True
    ) -> Batch:
        """``n`` samples per prompt (default ``n_samples_per_prompt``), with their behaviour
        log-probs unless ``logprobs`` is false."""
        engine = self.learner.engine
        engine.eval()
        read = self.read and logprobs
        with engine.gathered():
            experience = self.sampler.generate(
                prompts["input_ids"],
                prompts["attention_mask"],
                generator_seed=seed,
                with_logprobs=read,
                n=n,
            )
        if read or not logprobs:
            return experience
        return experience.with_(old_logprobs=self.learner.logprobs(experience)["logprobs"])


class WeightSender:
    """Rank 0 of the weight group (the engines are ranks 1…): opens the group's store, joins
    it, and broadcasts the policy's full parameters in the engines' dtype, a bucket of
    ``rollout.sync_bucket_mb`` per collective (:mod:`~rlhf_dist.rollout.weight_buckets`)."""

    def __init__(self, cfg: Config, engine: ModelEngine, rank: int):
        self.cfg, self.engine, self.rank = cfg, engine, rank
        self.store: Any = None
        self.group: Any = None
        self.device = torch.device("cpu")
        self.version: Optional[int] = None  # of the last sync rank 0 sent

    def open(self, host: str) -> Tuple[str, int]:
        """Rank 0: start the weight group's store on ``host`` (port picked by the OS)."""
        from rlhf_dist.engine.dist import group_store

        self.store = group_store(host, 0, True, self.cfg.resources.timeout_s)
        return host, self.store.port

    def join(self, world_size: int, backend: str) -> None:
        """Rank 0: join as rank 0 of ``world_size`` (returns once every engine joined)."""
        from rlhf_dist.engine.dist import local_device, standalone_group

        self.group = standalone_group(
            self.store, 0, world_size, backend, self.cfg.resources.timeout_s, host=self.store.host
        )
        # gloo sends CPU tensors, NCCL device ones; one broadcast: every engine is connected
        self.device = local_device() if backend == "nccl" else torch.device("cpu")
        self.group.broadcast(torch.zeros(1, device=self.device), 0).wait()

    def specs(self) -> List[Tuple[str, str, List[int]]]:
        """``(name, engine dtype, full shape)`` of every parameter, in sending order."""
        dtype = engine_dtype(self.cfg)
        return [(name, dtype, shape) for name, shape in self.engine.parameter_shapes()]

    @torch.no_grad()
    def broadcast(self, in_use: Callable[[], ContextManager]) -> None:
        """Collective on the actor's ranks: each bucket's ZeRO-3 shards are gathered together
        (``ModelEngine.full_parameter_buckets``) and rank 0 broadcasts the bucket to the
        engines as one buffer in their dtype; ``rollout.sync_bucket_mb=0`` sends each
        parameter as it is, one collective each.  Rank 0 first receives the sync's header from
        the engines (:meth:`_header`) and, on a checked sync, sends the CRC32 of every
        parameter after the last bucket.  ``in_use``: the worker's context that brings an
        idle-offloaded engine back to the device.

        An idle-offloaded engine whose parameters are whole on each rank (ZeRO ≤ 2) sends its
        CPU copies as they are when the group is gloo (colocated engines): its optimizer
        states are never brought back to the device the woken engines are using."""
        size = bucket_bytes(self.cfg.rollout.sync_bucket_mb)
        plan = plan_buckets(self.specs(), size)
        in_place = (
            self.engine.offloaded and self.engine.zero_stage < 3 and self.device.type == "cpu"
        )
        with (
            contextlib.nullcontext() if in_place else in_use(),
            contextlib.closing(
                self.engine.full_parameter_buckets([len(b.specs) for b in plan])
            ) as groups,
        ):
            # closing: a failed sync leaves no bucket gathered (the next gather would clash)
            if self.rank != 0:
                for _ in groups:  # the gathers are collective: every rank takes part
                    pass
                return
            verify = self._header(plan)
            checksums = self._send(plan, groups, packed=size > 0, verify=verify)
            if verify:
                self.group.broadcast(
                    torch.tensor(checksums, dtype=torch.int64, device=self.device), 0
                ).wait()

    def _send(self, plan: List[Any], groups: Any, packed: bool, verify: bool) -> List[int]:
        """Rank 0: broadcast each bucket; the actor's CRC32 of every parameter in the engines'
        dtype when ``verify`` (from its own tensors, not the bytes sent, so that a fault in
        packing shows).  Up to :data:`IN_FLIGHT` buckets travel while the next one is
        gathered and packed.  A bucket of one parameter is sent from the parameter's own
        memory when it is already in the engines' dtype and outlives the gather (ZeRO ≤ 2);
        the rest are packed into buffers of their own.  Unpacked (``sync_bucket_mb=0``),
        each parameter is sent from its own memory and waited for."""
        dtype = getattr(torch, engine_dtype(self.cfg))
        checksums: List[int] = []
        in_flight: Deque[Any] = deque()  # (buffer, work): the buffer lives until sent
        for bucket, tensors in zip(plan, groups):
            if verify:
                checksums.extend(tensor_crc(t.to(dtype)) for _, t in tensors)
            if packed and not self._sent_as_is(tensors, dtype):
                buffer = pack(bucket, tensors, self.device)
            else:
                buffer = tensors[0][1].to(device=self.device, dtype=dtype).contiguous()
                buffer = buffer.reshape(-1).view(torch.uint8)
            in_flight.append((buffer, self.group.broadcast(buffer, 0)))
            while in_flight and (not packed or len(in_flight) > IN_FLIGHT):
                in_flight.popleft()[1].wait()
        for _, work in in_flight:
            work.wait()
        return checksums

    def _sent_as_is(self, tensors: List[Tuple[str, torch.Tensor]], dtype: torch.dtype) -> bool:
        """A bucket of one parameter that needs no copy to travel: contiguous, in the
        engines' dtype, on the group's device, in memory that outlives the gather."""
        if len(tensors) != 1:
            return False
        tensor = tensors[0][1]
        return (
            tensor.dtype == dtype
            and tensor.device == self.device
            and tensor.is_contiguous()
            and self.engine.zero_stage < 3
        )

    def _header(self, plan: List[Any]) -> bool:
        """Rank 0: the sync's header, broadcast by the first engine worker (rank 1): the
        version, whether the sync is checked, and the engines' plan (buckets, bytes), which
        must be this one.  Whether it is checked is the driver's decision (its count of
        syncs); the version is kept (:attr:`version`)."""
        header = torch.zeros(4, dtype=torch.int64, device=self.device)
        self.group.broadcast(header, 1).wait()
        version, verify, buckets, nbytes = header.tolist()
        if (buckets, nbytes) != (len(plan), total_bytes(plan)):
            raise RuntimeError(
                f"weight sync of version {version}: the engines expect {buckets} "
                f"buckets of {nbytes} bytes in all, the actor has {len(plan)} of "
                f"{total_bytes(plan)} (a different rollout.sync_bucket_mb or "
                "model?)"
            )
        self.version = version
        return bool(verify)


class InActorReference:
    """The frozen reference in the actor's processes: ``own`` (a frozen engine built next to
    the policy, offloaded with it) or, without one, the policy's base (adapter off)."""

    def __init__(self, cfg: Config, policy: ModelEngine, own: Optional[ModelEngine]):
        self.cfg, self.policy, self.own = cfg, policy, own

    @classmethod
    def build(
        cls, cfg: Config, policy: ModelEngine, frozen_engine: Callable[[], ModelEngine]
    ) -> Optional["InActorReference"]:
        """The part ``cfg`` asks for, or None (the reference is a group of its own)."""
        if cfg.resources.reference_in_actor:
            return cls(cfg, policy, frozen_engine())
        if cfg.shared_reference:
            return cls(cfg, policy, None)
        return None

    def engines(self) -> List[ModelEngine]:
        """The engines this part adds to the rank (offloaded with the policy's)."""
        return [self.own] if self.own is not None else []

    def model(self):
        if self.own is not None:
            return self.own
        self.policy.eval()
        return self.policy.base()

    def logprobs(self, batch: Batch) -> Batch:
        return reference_logprobs(self.cfg, self.model(), batch)

    def sequence_logps(self, batch: Batch) -> Batch:
        return reference_sequence_logps(self.cfg, self.model(), batch)

    def checksum(self) -> float:
        """Collective under ZeRO-3: CRC32 of the reference's full weights."""
        if self.own is not None:
            return self.own.state_checksum()
        return self.policy.state_checksum(base=True)

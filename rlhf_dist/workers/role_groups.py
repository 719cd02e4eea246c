"""Role groups: the driver's view of each role, one explicit method per remote call, and
:class:`RoleGroups`, a job's groups together."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ray.util.placement_group import PlacementGroup, remove_placement_group

from rlhf_dist.config import ResourcesConfig, TrainConfig
from rlhf_dist.protocol import Batch
from rlhf_dist.utils import mean_rows
from rlhf_dist.workers.worker_group import WorkerGroup


class Pending:
    """A call in flight on a group; ``result()`` waits (with the group's timeout)."""

    def __init__(self, group: WorkerGroup, refs: list, combine: Callable[[list], object]):
        self.group, self.refs, self.combine = group, refs, combine

    def result(self):
        return self.combine(self.group._get(self.refs))


def wait_all(pending: Iterable[Pending]) -> list:
    """The results of calls started side by side (every group's build, every rank's step),
    in their order."""
    return [p.result() for p in pending]


def _built(group: WorkerGroup, call) -> Pending:
    """The engines' build started on every rank; ``result()`` waits.  Jobs start every
    group's build before waiting for any: the models load side by side."""
    return Pending(group, [call(worker) for worker in group.workers], lambda _: None)


def _logprobs(group: WorkerGroup, call, batch: Batch) -> Pending:
    """Scatter ``batch`` over the group's ranks with ``call(worker, chunk)``; ``result()``:
    the ranks' ``logprobs`` concatenated."""
    refs = group._scatter_refs(call, batch)
    return Pending(group, refs, lambda parts: Batch.concat(parts)["logprobs"])


def _sequence_logps(group: WorkerGroup, call, per_rank: List[List[Batch]]) -> List[List[Batch]]:
    """``call(worker, micro)`` on each rank's micro-batches, results attached as
    ``ref_logps``.  Every rank gets the same number of calls (ZeRO-3 forwards are
    collective)."""
    refs = [[call(w, m) for m in micro] for w, micro in zip(group.workers, per_rank)]
    flat = group._get([r for rank_refs in refs for r in rank_refs])
    out, i = [], 0
    for micro in per_rank:
        out.append([m.with_(ref_logps=flat[i + j]["ref_logps"]) for j, m in enumerate(micro)])
        i += len(micro)
    return out


class Learner:
    """A learner group's updates of one PPO iteration: each rank's share of the experience
    (:func:`~rlhf_dist.rollout.replay.learner_plan`) is put in Ray's object store once, and
    :meth:`epoch` runs one epoch's optimiser steps on every rank with one call per rank."""

    def __init__(
        self,
        group: WorkerGroup,
        call,
        experience: Batch,
        mini_batch_size: int,
        epochs: int,
        seed: int,
    ):
        import ray

        from rlhf_dist.rollout.replay import learner_plan

        self.group, self.call = group, call
        self.plans = learner_plan(len(experience), mini_batch_size, epochs, seed, group.world_size)
        self.shares = [ray.put(experience.index_select(plan.rows)) for plan in self.plans]

    def epoch(self, epoch: int) -> Pending:
        """``result()``: per minibatch, its metrics (the mean over ranks)."""
        refs = [
            self.call(worker, share, plan.steps[epoch])
            for worker, share, plan in zip(self.group.workers, self.shares, self.plans)
        ]
        return Pending(
            self.group, refs, lambda ranks: [mean_rows(list(rows)) for rows in zip(*ranks)]
        )


class _ModelGroup(WorkerGroup):
    def save(self, directory: str) -> None:
        self._broadcast(lambda w: w.save.remote(directory))

    def load(self, directory: str) -> None:
        self._broadcast(lambda w: w.load.remote(directory))

    def export_hf(self, directory: str) -> None:
        self._broadcast(lambda w: w.export_hf.remote(directory))

    def state_checksum(self) -> float:
        """CRC32 of the full weights, from rank 0."""
        return self._broadcast(lambda w: w.state_checksum.remote())[0]

    def size_metrics(self) -> Dict[str, float]:
        """Parameter counts and rank 0's parameter / Adam-state MiB (``size_metrics``)."""
        return self._broadcast(lambda w: w.size_metrics.remote())[0]

    def offload_stats(self) -> Dict[str, float]:
        """Idle offload (``roles._ModelWorker.offload_stats``), the mean over ranks."""
        return mean_rows(self._broadcast(lambda w: w.offload_stats.remote()))


class ActorGroup(_ModelGroup):
    def build(self, train: TrainConfig, total_steps: int) -> Pending:
        return _built(self, lambda w: w.build.remote(train, total_steps))

    def generate(
        self,
        prompts: Batch,
        seed: int,
        pad_token_id: int,
        n: Optional[int] = None,
        logprobs: bool = True,
    ) -> Batch:
        """Each rank samples ``n`` responses (default ``n_samples_per_prompt``) for each of its
        share of the prompts, with the behaviour log-probs unless ``logprobs`` is false;
        responses of different lengths are right-padded to the longest before
        concatenation."""
        from rlhf_dist.rollout import concat_rollouts

        parts = self._get(
            self._scatter_refs(lambda w, c: w.generate.remote(c, seed, n, logprobs), prompts)
        )
        return concat_rollouts(parts, pad_token_id)

    def logprobs(self, batch: Batch) -> Pending:
        return _logprobs(self, lambda w, c: w.logprobs.remote(c), batch)

    # the weight sync to the vLLM engines (``rollout_engines.RolloutEngines``): rank 0 sends
    def open_weight_group(self) -> Tuple[str, int]:
        return self._get([self.workers[0].open_weight_group.remote()])[0]

    def join_weight_group(self, world_size: int, backend: str) -> None:
        self._get([self.workers[0].join_weight_group.remote(world_size, backend)])

    def reference_checksum(self) -> float:
        """CRC32 of the reference this group holds (``ActorReference``), from rank 0."""
        return self._broadcast(lambda w: w.reference_checksum.remote())[0]

    def weight_specs(self) -> list:
        return self._get([self.workers[0].weight_specs.remote()])[0]

    def broadcast_weights(self) -> None:
        self._broadcast(lambda w: w.broadcast_weights.remote())

    def release_device_cache(self) -> None:
        """Every rank returns PyTorch's cached, unused device blocks (before vLLM wakes)."""
        self._broadcast(lambda w: w.release_device_cache.remote())

    def ppo_learner(
        self, experience: Batch, mini_batch_size: int, epochs: int, seed: int
    ) -> Learner:
        """The actor's PPO updates on ``experience`` (:class:`Learner`)."""
        return Learner(
            self,
            lambda w, share, steps: w.ppo_epoch.remote(share, steps),
            experience,
            mini_batch_size,
            epochs,
            seed,
        )

    def dpo_update(self, per_rank: List[List[Batch]]) -> Dict[str, float]:
        """``per_rank[r]`` holds rank r's micro-batches of one optimiser step."""
        return mean_rows(
            self._get([w.dpo_update.remote(micro) for w, micro in zip(self.workers, per_rank)])
        )

    def dpo_eval(self, per_rank: List[List[Batch]]) -> Dict[str, float]:
        """DPO eval metrics over every rank's micro-batches: summed, divided by the pairs."""
        rows = self._get([w.dpo_eval.remote(micro) for w, micro in zip(self.workers, per_rank)])
        totals = {key: sum(row.get(key, 0.0) for row in rows) for key in rows[0]}
        count = max(totals.pop("count", 0.0), 1.0)
        return {key: value / count for key, value in totals.items()}


class ReferenceGroup(_ModelGroup):
    def build(self) -> Pending:
        return _built(self, lambda w: w.build.remote())

    def logprobs(self, batch: Batch) -> Pending:
        return _logprobs(self, lambda w, c: w.logprobs.remote(c), batch)

    def sequence_logps(self, per_rank: List[List[Batch]]) -> List[List[Batch]]:
        """Reference log-probs for each rank's micro-batches, attached as ``ref_logps``."""
        return _sequence_logps(self, lambda w, m: w.sequence_logps.remote(m), per_rank)


class ActorReference:
    """The reference group's calls answered by the actor group's own processes, with no
    group of its own: its frozen engine (``resources.reference_in_actor``) or, with a
    shared LoRA base (``Config.shared_reference``), its engine with the adapter off."""

    role = "reference"

    def __init__(self, actor: ActorGroup):
        self.actor = actor

    def logprobs(self, batch: Batch) -> Pending:
        return _logprobs(self.actor, lambda w, c: w.reference_logprobs.remote(c), batch)

    def sequence_logps(self, per_rank: List[List[Batch]]) -> List[List[Batch]]:
        return _sequence_logps(
            self.actor, lambda w, m: w.reference_sequence_logps.remote(m), per_rank
        )

    def state_checksum(self) -> float:
        """CRC32 of the reference's full weights, from actor rank 0."""
        return self.actor.reference_checksum()


class RewardGroup(_ModelGroup):
    def build(self) -> Pending:
        return _built(self, lambda w: w.build.remote())

    def score(self, batch: Batch) -> Pending:
        refs = self._scatter_refs(lambda w, c: w.score.remote(c), batch)
        return Pending(self, refs, lambda parts: Batch.concat(parts)["scores"])


class CriticGroup(_ModelGroup):
    def build(self, train: TrainConfig, total_steps: int) -> Pending:
        return _built(self, lambda w: w.build.remote(train, total_steps))

    def values(self, batch: Batch) -> Pending:
        refs = self._scatter_refs(lambda w, c: w.values.remote(c), batch)
        return Pending(self, refs, lambda parts: Batch.concat(parts)["values"])

    def value_learner(
        self, experience: Batch, mini_batch_size: int, epochs: int, seed: int
    ) -> Learner:
        """The critic's value updates on ``experience`` (:class:`Learner`)."""
        return Learner(
            self,
            lambda w, share, steps: w.value_epoch.remote(share, steps),
            experience,
            mini_batch_size,
            epochs,
            seed,
        )


@dataclass
class RoleGroups:
    """The groups of a job and the placement groups they hold."""

    actor: Optional[ActorGroup] = None
    reference: Optional[ReferenceGroup] = None
    reward: Optional[RewardGroup] = None
    critic: Optional[CriticGroup] = None
    rollout: Optional[Any] = None  # the rollout backend (rlhf_dist.rollout.interface.Rollout)
    placement_groups: List[PlacementGroup] = field(default_factory=list)

    def all(self):
        return [g for g in (self.actor, self.reference, self.reward, self.critic) if g]

    def reference_calls(self):
        """Where reference log-probs come from: the reference group, or the actor's processes
        when there is none (``Config.reference_group``: a shared LoRA base or
        ``resources.reference_in_actor``)."""
        return self.reference or ActorReference(self.actor)

    def size_metrics(self) -> Dict[str, float]:
        """Parameter counts and per-rank memory of the trained groups (at start)."""
        return {k: v for group in self.trained() for k, v in group.size_metrics().items()}

    def kill(self) -> None:
        """Kill every group's workers and give the placement groups' resources back (on a
        cluster that outlives the job, the next job would otherwise find them reserved)."""
        for group in self.all() + ([self.rollout] if self.rollout else []):
            group.kill()
        for pg in self.placement_groups:
            remove_placement_group(pg)
        self.placement_groups = []

    def trained(self):
        """The groups a checkpoint holds: the actor and, when there is one, the critic."""
        return [g for g in (self.actor, self.critic) if g]

    def save_trained(self, directory: Path) -> None:
        for group in self.trained():
            group.save(str(directory / group.role))

    def load_trained(self, directory: Path) -> None:
        for group in self.trained():
            group.load(str(directory / group.role))

    def offload_metrics(self, res: ResourcesConfig) -> Dict[str, float]:
        """``perf/<role>_offload_s`` (seconds spent offloading and reloading since the last
        call) and ``perf/<role>_offloaded`` of the roles with ``offload_when_idle``."""
        metrics: Dict[str, float] = {}
        for group in self.all():
            if getattr(res, group.role).offload_when_idle:
                metrics.update(group.offload_stats())
        return metrics

    def placement_metrics(self) -> Dict[str, float]:
        """``placement/<role>_nodes``: on how many Ray nodes each created group's ranks run
        (logged once per job: shows SPREAD at work, and which groups exist at all)."""
        return {f"placement/{g.role}_nodes": float(len(set(g.node_ids()))) for g in self.all()}

"""The vLLM rollout engines of ``rollout.backend=vllm``: one Ray actor per engine, and the
driver's view of them (:class:`RolloutEngines`).

Prompts are spread over the engines in contiguous parts; each sampled row has a seed of its
own, the same whatever engine serves it.  The weight sync is a broadcast from
the actor's rank 0 to every engine worker on a group of their own (gloo on CPU, NCCL on GPU):
the actor's ranks gather the parameters a bucket of ``rollout.sync_bucket_mb`` at a time
(ZeRO-3 shards gathered per bucket), rank 0 sends each bucket as one buffer in the engine's
dtype, the engines load them as they arrive.  Every sync carries the policy version, which
each engine reports back; every ``rollout.verify_sync_every`` syncs the engines' CRC32 of every
parameter is compared with the actor's (:class:`WeightSyncError` names the engine and the
first parameter that differs).  A sync waits ``resources.timeout_s`` at most for any party: an
engine that does not finish in time is a lost worker, named.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional

import ray
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlhf_dist.config import Config
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.weight_buckets import bucket_bytes, sync_problem
from rlhf_dist.workers.base import location
from rlhf_dist.workers.errors import WorkerError, WorkerLost
from rlhf_dist.workers.worker_group import PROBE_S, RayGroup, device_per_worker

COLOCATED_SHARE = 0.2  # of an actor bundle's device (and CPUs) an engine takes when colocated
POLL_S = 0.1  # how often a sync's wait looks at the actor's side


class WeightSyncError(WorkerError):
    """An engine's weights are not the ones the actor sent: another version, or a parameter
    whose checksum differs (``rollout.verify_sync_every``).  Stops the run: no restart would
    fix what made them differ."""


def engine_dtype(cfg: Config) -> str:
    """The dtype the engines compute in: the actor's weights' (bf16 under deepspeed.bf16)."""
    return "bfloat16" if cfg.deepspeed.for_role("actor").bf16 else cfg.model.dtype


class VLLMEngineWorker:
    """One vLLM engine in its own Ray actor, its weights left uninitialised
    (``load_format=dummy``) until the first sync."""

    def __init__(self, cfg: Config, index: int, model: Any):
        from rlhf_dist.rollout.vllm_engine import VLLMRolloutEngine, config_dir

        self.cfg, self.index = cfg, index
        self.tp = cfg.resources.rollout.tensor_parallel_size
        with config_dir(model.config_json) as directory:
            self.engine = VLLMRolloutEngine(
                directory,
                cfg.rollout,
                cfg.resources.rollout,
                engine_dtype(cfg),
                seed=cfg.seed + index,
                stop=model.stop,
                pad_token_id=model.pad_token_id,
                load_format="dummy",
                sleep_mode=cfg.resources.colocate_rollout,
            )

    def generate(self, prompts: Batch, seed: int, first_row: int, n: Optional[int] = None) -> Batch:
        return self.engine.generate(
            prompts["input_ids"], prompts["attention_mask"], seed, first_row, n
        )

    def init_weight_group(
        self, host: str, port: int, world_size: int, backend: str, timeout_s: float
    ) -> None:
        self.engine.init_weight_group(
            host,
            port,
            1 + self.index * self.tp,
            world_size,
            backend,
            timeout_s,
            ray.util.get_node_ip_address(),
        )

    def receive_weights(self, specs: List, version: int, verify: bool) -> List[Any]:
        """Each worker's :class:`~rlhf_dist.rollout.weight_buckets.SyncReport`."""
        return self.engine.receive_weights(
            specs, version, verify, bucket_bytes(self.cfg.rollout.sync_bucket_mb)
        )

    def sleep(self) -> None:
        self.engine.sleep()

    def wake_up(self, tags: Optional[List[str]] = None) -> None:
        self.engine.wake_up(tags)

    def location(self) -> Dict[str, Any]:
        return location()


def engine_bundles(cfg: Config) -> List[Dict[str, float]]:
    """One bundle per engine (not colocated): its ``tensor_parallel_size`` devices and CPUs."""
    res = cfg.resources.rollout
    gpus = {"GPU": res.tensor_parallel_size} if device_per_worker() == "GPU" else {}
    return [{"CPU": res.cpus_per_worker * res.tensor_parallel_size, **gpus}] * res.num_engines


class RolloutEngines(RayGroup):
    """``resources.rollout.num_engines`` engines: on bundles of their own, or (colocated) one
    on each actor bundle.  Errors name ``rollout engine`` and the engine's index."""

    def __init__(self, cfg: Config, model: Any, pg: PlacementGroup):
        """``model``: :class:`~rlhf_dist.rollout.vllm_preflight.EngineModel`."""
        res, self.cfg = cfg.resources, cfg
        self.role, self.timeout_s = "rollout engine", res.timeout_s
        self.world_size = res.rollout.num_engines
        self.syncs = 0  # weight syncs done (every verify_sync_every-th, from the first, checked)
        self.reports: List[List[Any]] = []  # the last sync's SyncReports: per engine, per worker
        tp, use_gpu = res.rollout.tensor_parallel_size, device_per_worker() == "GPU"
        share = COLOCATED_SHARE if res.colocate_rollout else 1.0
        # colocated: a share of the actor's bundle, so of its CPUs
        cpus = (
            res.actor.cpus_per_worker * share
            if res.colocate_rollout
            else res.rollout.cpus_per_worker * tp
        )
        remote_cls = ray.remote(VLLMEngineWorker)
        self.workers = [
            remote_cls.options(
                num_cpus=cpus,
                num_gpus=(tp * share) if use_gpu else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=i
                ),
            ).remote(cfg, i, model)
            for i in range(self.world_size)
        ]
        try:
            self._broadcast(lambda w: w.location.remote())  # started, or an error naming it
        except BaseException:
            self.kill()
            raise

    def generate(
        self, prompts: Batch, seed: int, pad_token_id: int, n: Optional[int] = None
    ) -> Batch:
        """Each engine samples ``n`` (default ``n_samples_per_prompt``) responses for each of
        a contiguous part of the prompts, each row with a seed of its own that does not
        depend on the split (``VLLMRolloutEngine.generate``); parts are joined as the actor's
        ranks' are (:func:`concat_rollouts`)."""
        return self.collect(self.submit(prompts, seed, n), pad_token_id)

    def submit(self, prompts: Batch, seed: int, n: Optional[int] = None) -> List[Any]:
        """:meth:`generate` started, not waited for: the engines' pending results (each
        engine serves its calls in order, so a later sync waits for them)."""
        n = self.cfg.rollout.n_samples_per_prompt if n is None else n
        parts = prompts.chunk(min(self.world_size, len(prompts)))
        firsts = [n * sum(len(p) for p in parts[:i]) for i in range(len(parts))]
        return [
            w.generate.remote(part, seed, first, n)
            for w, part, first in zip(self.workers, parts, firsts)
        ]

    def collect(self, pending: List[Any], pad_token_id: int) -> Batch:
        """The Batch of a :meth:`submit` (waits, ``resources.timeout_s`` at most)."""
        from rlhf_dist.rollout import concat_rollouts

        return concat_rollouts(self._get(pending), pad_token_id)

    def connect(self, actor: Any) -> None:
        """Form the weight group: the actor's rank 0 (rank 0 of the group, its store's host)
        and every engine worker (ranks 1…)."""
        res = self.cfg.resources
        world = 1 + res.rollout.world_size
        host, port = actor.open_weight_group()
        # NCCL cannot join two ranks on one GPU (a colocated engine shares the actor's):
        # colocated weights go through CPU memory over gloo
        nccl = device_per_worker() == "GPU" and not res.colocate_rollout
        backend = "nccl" if nccl else "gloo"
        refs = [
            w.init_weight_group.remote(host, port, world, backend, self.timeout_s)
            for w in self.workers
        ]
        self._alongside_actor(lambda: actor.join_weight_group(world, backend), refs)

    def sync_from(self, actor: Any, version: int) -> float:
        """Send the actor's current weights, policy ``version``, to every engine; the seconds
        it took.  Each engine must report ``version`` back and, on a checked sync (every
        ``rollout.verify_sync_every``-th, the first included), its checksum of every
        parameter must be the actor's: else :class:`WeightSyncError`."""
        started = time.perf_counter()
        every = self.cfg.rollout.verify_sync_every
        verify = every > 0 and self.syncs % every == 0
        specs = actor.weight_specs()
        refs = [w.receive_weights.remote(specs, version, verify) for w in self.workers]
        reports = self._alongside_actor(
            actor.broadcast_weights, refs, f"weight sync of version {version}"
        )
        self.syncs, self.reports = self.syncs + 1, reports
        for index, per_worker in enumerate(reports):
            for worker, report in enumerate(per_worker):
                where = f"{self.role} rank {index}"
                engine = where + (f" (worker {worker})" if len(per_worker) > 1 else "")
                problem = sync_problem(report, specs, version, engine)
                if problem is not None:
                    raise WeightSyncError(problem, where)
        return time.perf_counter() - started

    def _alongside_actor(
        self, actor_call: Callable[[], Any], refs: List[Any], what: str = "weight group"
    ) -> List[Any]:
        """The engines' results of ``refs`` while ``actor_call`` -- an actor call whose
        collective spans the engines -- runs in a thread.  The fault is named after the
        worker that caused it: an engine that died (also when the actor's collective failed
        first, having lost it), else the actor's own error, else an engine that failed, or the
        engines still without an answer after ``resources.timeout_s`` (a :class:`WorkerLost`:
        a stalled engine is a lost worker, never a hang)."""
        call = _Call(actor_call)
        deadline = time.monotonic() + self.timeout_s
        pending = list(refs)
        while pending and not call.failed() and time.monotonic() < deadline:
            ready, pending = ray.wait(
                pending, num_returns=1, timeout=min(POLL_S, max(deadline - time.monotonic(), 0))
            )
            if ready and _raised(ready[0]):
                break
        if call.failed():
            self._raise_if_a_rank_died(call.error)
            raise call.error
        if pending and not any(_raised(r) for r in refs if r not in pending):
            missing = sorted(refs.index(r) for r in pending)
            sending = "" if call.done.is_set() else "; the actor's side had not returned either"
            raise WorkerLost(
                f"{self.role} ranks {missing}: no answer within "
                f"{self.timeout_s:.0f}s ({self.timeout_key}) in the {what}"
                f"{sending}",
                f"{self.role} ranks {missing}",
            )
        try:
            results = self._get(refs)
        except WorkerError as err:
            # an engine that lost the actor in the collective: the actor's fault comes first
            if call.done.wait(PROBE_S) and isinstance(call.error, WorkerLost):
                raise call.error from err
            raise
        call.done.wait()  # the actor's call waits resources.timeout_s at most itself
        if call.error is not None:
            raise call.error
        return results

    def sleep(self) -> None:
        self._broadcast(lambda w: w.sleep.remote())

    def wake_up(self, tags: Optional[List[str]] = None) -> None:
        self._broadcast(lambda w: w.wake_up.remote(tags))

    def sync_colocated(self, actor: Any, version: int) -> float:
        """The weight sync of sleeping engines that share the actor's devices, in the order
        that keeps the peak low (verl's and OpenRLHF's): wake the weights only, sync, let the
        actor return its cached blocks to the device, then wake the KV cache.  The actor
        sends without reloading an idle-offloaded optimizer (``ActorWorker.broadcast_weights``).
        The seconds it took."""
        self.wake_up(["weights"])
        seconds = self.sync_from(actor, version)
        actor.release_device_cache()
        self.wake_up(["kv_cache"])
        return seconds


class _Call:
    """A blocking call run in a daemon thread: ``done`` is set when it returned or raised
    (``error``).  Daemon: a call stuck on a lost peer never keeps the driver from exiting."""

    def __init__(self, fn: Callable[[], Any]):
        self.error: Optional[BaseException] = None
        self.done = threading.Event()
        self._fn = fn
        threading.Thread(target=self._run, name="weight-sync-actor", daemon=True).start()

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            self.error = err
        finally:
            self.done.set()

    def failed(self) -> bool:
        return self.done.is_set() and self.error is not None


def _raised(ref: Any) -> bool:
    """Whether a finished call raised (its error is reported by ``RayGroup._get``)."""
    try:
        ray.get(ref, timeout=0)
    except Exception:  # noqa: BLE001 - any failure: RayTaskError, RayActorError, ...
        return True
    return False

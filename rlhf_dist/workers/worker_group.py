"""WorkerGroup: N Ray actors of one role, placed by a placement group, forming one
torch.distributed group (and one DeepSpeed engine) among themselves.  Its base, RayGroup, is
shared with the vLLM rollout engines (``rollout_engines.py``), which form no such group.

Group methods (in ``role_groups.py``) are explicit Python methods; this module gives them
``_scatter_refs`` (a Batch split by data-parallel rank, one call per rank) and ``_broadcast``
(the same call on every rank), and ``_get``, which waits with a timeout and turns a dead or
silent worker into :class:`WorkerLost`, a raising one into :class:`WorkerError` (a non-finite
value into ``NonFiniteError``), each naming the role and the rank.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlhf_dist.algo.finite import NonFiniteError
from rlhf_dist.config import RoleResources
from rlhf_dist.workers.errors import WorkerError, WorkerLost, first_line  # noqa: F401 (re-export)

log = logging.getLogger(__name__)


PROBE_S = 10.0  # how long a failed call waits to learn whether a rank of its group died


def device_per_worker() -> str:
    return "GPU" if ray.cluster_resources().get("GPU", 0) > 0 else "CPU"


def role_bundles(res: RoleResources) -> List[Dict[str, float]]:
    """One bundle per rank: a device (GPU clusters) plus ``cpus_per_worker`` CPUs."""
    use_gpu = device_per_worker() == "GPU"
    return [{"CPU": res.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}] * res.world_size


def make_placement(
    res: RoleResources, strategy: str, name: str, timeout_s: float
) -> PlacementGroup:
    return place_bundles(role_bundles(res), strategy, name, timeout_s)


def place_bundles(
    bundles: List[Dict[str, float]], strategy: str, name: str, timeout_s: float
) -> PlacementGroup:
    """A placement group of ``bundles``, ready, or an error naming what the cluster has."""
    pg = placement_group([dict(b) for b in bundles], strategy=strategy, name=name)
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        state = ray.util.placement_group_table(pg).get("stats", {}).get("scheduling_state", "?")
        remove_placement_group(pg)
        raise WorkerError(
            f"{name}: placement of {len(bundles)} bundles {bundles[0]} ({strategy}) not "
            f"possible within {timeout_s:.0f}s (resources.timeout_s; Ray says {state}); "
            f"cluster has {ray.cluster_resources()}, free {ray.available_resources()}"
        )
    return pg


class RayGroup:
    """Ray actors of one kind, called together: waiting with a timeout, errors that name
    the group (``role``) and the rank of the actor that failed."""

    role: str
    timeout_s: float
    world_size: int
    workers: List[Any]
    timeout_key = "resources.timeout_s"  # the setting a "no answer" error names
    # exceptions raised inside a worker that reach the caller as they are (the CLI knows them)
    passthrough: tuple = ()

    def _get(self, refs: List[ray.ObjectRef], ranks: Optional[List[int]] = None) -> List[Any]:
        """Results in rank order; the first failure raises naming role and rank; a call still
        running after ``timeout_s`` raises naming the ranks that did not answer."""
        ranks = list(range(len(refs))) if ranks is None else ranks
        rank_of = {ref: rank for ref, rank in zip(refs, ranks)}
        results, pending = {}, list(refs)
        deadline = time.monotonic() + self.timeout_s
        while pending:
            ready, pending = ray.wait(
                pending, num_returns=1, timeout=max(deadline - time.monotonic(), 0)
            )
            if not ready:
                missing = sorted(rank_of[r] for r in pending)
                raise WorkerLost(
                    f"{self.role} ranks {missing}: no answer within "
                    f"{self.timeout_s:.0f}s ({self.timeout_key})",
                    f"{self.role} ranks {missing}",
                )
            ref = ready[0]
            try:
                results[ref] = ray.get(ref)
            except (RayActorError, GetTimeoutError) as err:
                raise WorkerLost(
                    f"{self.role} rank {rank_of[ref]} died: "
                    f"{type(err).__name__}: {first_line(err)}",
                    f"{self.role} rank {rank_of[ref]}",
                ) from err
            except RayTaskError as err:
                self._raise_if_a_rank_died(err)
                if isinstance(err.cause, NonFiniteError):  # a numerical fault, not a bug
                    raise err.cause.prefixed(f"{self.role} rank {rank_of[ref]}") from None
                if isinstance(err.cause, self.passthrough):
                    raise err.cause from None
                # the worker's own exception and text, not Ray's wrapper (whose first line is
                # the actor's repr); the full remote traceback stays chained for --debug
                cause = err.cause if isinstance(err.cause, BaseException) else err
                raise WorkerError(
                    f"{self.role} rank {rank_of[ref]} failed: "
                    f"{type(cause).__name__}: {str(cause).strip()}",
                    f"{self.role} rank {rank_of[ref]}",
                ) from err
        return [results[ref] for ref in refs]

    def _raise_if_a_rank_died(self, err: Exception) -> None:
        """A rank that raised may only have lost a peer in a collective: the dead peer is
        the fault to report (and to recover from)."""
        probes = {w.location.remote(): rank for rank, w in enumerate(self.workers)}
        ready, _ = ray.wait(list(probes), num_returns=len(probes), timeout=PROBE_S)
        for ref in ready:
            try:
                ray.get(ref)
            except RayActorError as death:
                raise WorkerLost(
                    f"{self.role} rank {probes[ref]} died: "
                    f"{type(death).__name__}: {first_line(death)}",
                    f"{self.role} rank {probes[ref]}",
                ) from err

    def _broadcast(self, call: Callable[[Any], ray.ObjectRef]) -> List[Any]:
        """The same call on every rank (collectives inside stay in step)."""
        return self._get([call(worker) for worker in self.workers])

    def _scatter_refs(self, call: Callable[[Any, Any], ray.ObjectRef], batch) -> List:
        chunks = batch.chunk(self.world_size)
        return [call(worker, chunk) for worker, chunk in zip(self.workers, chunks)]

    def locations(self) -> List[Dict[str, Any]]:
        """Per rank (in rank order): ``{"node_id", "ip", "pid"}`` of its worker process."""
        return self._broadcast(lambda w: w.location.remote())

    def node_ids(self) -> List[str]:
        """The Ray node id of each rank, in rank order."""
        return [where["node_id"] for where in self.locations()]

    def kill(self) -> None:
        for worker in self.workers:
            ray.kill(worker, no_restart=True)


class WorkerGroup(RayGroup):
    """Ranks ``0..N-1`` of one role.  ``share`` is the fraction of each bundle this role takes
    (1.0 alone, 0.5 when two roles are colocated on the same bundles)."""

    def __init__(
        self,
        role: str,
        worker_cls,
        res: RoleResources,
        pg: PlacementGroup,
        worker_args: Sequence[Any],
        timeout_s: float,
        share: float = 1.0,
        wait: bool = True,
    ):
        """Starts the ranks' processes and their process group; ``wait=False`` returns at once
        (several groups then start side by side) and :meth:`wait_started` waits."""
        self.role, self.timeout_s, self.world_size = role, timeout_s, res.world_size
        use_gpu = device_per_worker() == "GPU"
        remote_cls = ray.remote(worker_cls)
        self.workers = []
        for rank in range(self.world_size):
            options = dict(
                num_cpus=res.cpus_per_worker * share,
                num_gpus=share if use_gpu else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=rank
                ),
            )
            self.workers.append(remote_cls.options(**options).remote(*worker_args))
        # rank 0's (address, port) reaches every rank's init_distributed through Ray
        self._master = self.workers[0].master_address.remote()
        self._starting = [
            w.init_distributed.remote(rank, self.world_size, self._master)
            for rank, w in enumerate(self.workers)
        ]
        if wait:
            self.wait_started()

    def wait_started(self) -> None:
        """Every rank up and in the group (a no-op once done); a failure kills the group."""
        if not self._starting:
            return
        try:
            self._get(self._starting)
        except BaseException:
            self.kill()  # no half-formed group left behind
            raise
        self._starting = []
        log.info(
            "%s group: %d ranks, master %s:%s", self.role, self.world_size, *ray.get(self._master)
        )

"""The receiving end of the weight sync, inside each vLLM worker.

vLLM mixes this class into its workers (``LLM(worker_extension_cls=…)``) and runs its methods
with ``LLM.collective_rpc``: the supported way to reach a worker, no patching of vLLM.  The
actor's rank 0 broadcasts the parameters (full, in the engine's dtype) on a process group
whose rank 0 it is, a bucket of them per collective (:mod:`~rlhf_dist.rollout.weight_buckets`:
both ends plan the buckets from the same specs and size); each worker receives the buckets in
order -- the next one already posted while vLLM loads the current -- and streams their
tensors into ``model_runner.reload_weights``, which loads checkpoint-format tensors (the engine
shards them for tensor parallelism and repacks them for its CPU kernels).

A sync starts with a header the first engine worker (rank 1) broadcasts: the version, whether
the sync is checked, and the plan's size, which the actor compares with its own.  On a checked
sync each worker takes the CRC32 of every tensor it hands to vLLM's loader and, after the last
bucket, receives the actor's CRC32s: its :class:`~rlhf_dist.rollout.weight_buckets.SyncReport`
carries both, and the driver compares them.  (vLLM's CPU kernels repack the linear layers'
weights and drop the plain tensors, so the loaded copies cannot be read back: the check covers
everything up to vLLM's loader -- the plan, the wire, the unpacking, the names.)
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from rlhf_dist.engine.dist import group_store, standalone_group
from rlhf_dist.rollout.weight_buckets import (
    IN_FLIGHT,
    MISSING,
    Bucket,
    SyncReport,
    WeightSpec,
    plan_buckets,
    tensor_crc,
    total_bytes,
    unpack,
)

# A test's broken sync: the parameter of this name is dropped before vLLM's loader (the
# engine keeps its old copy).  Set by tests inside the engine's process; no config reads it.
SKIP_FOR_TEST: Optional[str] = None


class WeightReceiver:
    """Methods of a vLLM worker (``self`` is the worker: ``rank``, ``model_runner``)."""

    def init_weight_group(
        self,
        host: str,
        port: int,
        rank_offset: int,
        world_size: int,
        backend: str,
        timeout_s: float,
        local_host: Optional[str] = None,
    ) -> None:
        """Join the weight group as rank ``rank_offset`` + this worker's rank (gloo bound to
        ``local_host``, this node's address)."""
        store = group_store(host, port, is_master=False, timeout_s=timeout_s)
        self._weight_group = standalone_group(
            store, rank_offset + self.rank, world_size, backend, timeout_s, host=local_host
        )
        self._weight_store = store  # the group needs its store alive
        # gloo moves CPU tensors (also what colocated engines use), NCCL device ones
        self._weight_device = self.model_runner.device if backend == "nccl" else "cpu"
        self._weight_version: Optional[int] = None
        self._weight_group.broadcast(torch.zeros(1, device=self._weight_device), 0).wait()

    def _post(self, bucket: Bucket):
        buffer = torch.empty(bucket.nbytes, dtype=torch.uint8, device=self._weight_device)
        return bucket, buffer, self._weight_group.broadcast(buffer, 0)

    def _received(
        self, plan: Sequence[Bucket], crcs: Optional[Dict[str, int]]
    ) -> Iterator[Tuple[str, torch.Tensor]]:
        """The tensors of every bucket of ``plan`` as they arrive (views of the bucket's
        buffer); the receives of the next :data:`IN_FLIGHT` buckets are posted while one is
        loaded.  ``crcs``: filled with the CRC32 of each tensor handed on (a checked sync)."""
        buckets = iter(plan)
        arriving = deque(self._post(b) for b in islice(buckets, IN_FLIGHT))
        while arriving:
            bucket, buffer, work = arriving.popleft()
            work.wait()
            arriving.extend(self._post(b) for b in islice(buckets, 1))
            for name, tensor in unpack(buffer, bucket):
                if name == SKIP_FOR_TEST:
                    continue
                if crcs is not None:
                    crcs[name] = tensor_crc(tensor)
                yield name, tensor

    def receive_weights(
        self, specs: Sequence[WeightSpec], version: int, verify: bool, bucket_bytes: int
    ) -> SyncReport:
        """Receive the parameters of ``specs`` (name, dtype, shape: the sender's order) in
        buckets of ``bucket_bytes`` and load them; the report of the version now held and,
        when ``verify``, of the checksums."""
        plan = plan_buckets(specs, bucket_bytes)
        header = torch.tensor(
            [version, int(verify), len(plan), total_bytes(plan)],
            dtype=torch.int64,
            device=self._weight_device,
        )
        self._weight_group.broadcast(header, 1).wait()  # rank 1's reaches the actor
        crcs: Optional[Dict[str, int]] = {} if verify else None
        stream = self._received(plan, crcs)
        self.model_runner.reload_weights(weights_iterator=stream)
        left = sum(1 for _ in stream)  # received all the same: the actor sends them all
        if left:
            raise RuntimeError(
                f"weight sync of version {version}: vLLM's loader stopped "
                f"{left} tensors before the end"
            )
        self._weight_version = version
        if crcs is None:
            return SyncReport(self._weight_version)
        expected = torch.zeros(len(specs), dtype=torch.int64, device=self._weight_device)
        self._weight_group.broadcast(expected, 0).wait()
        got: List[int] = [crcs.get(name, MISSING) for name, _, _ in specs]
        return SyncReport(self._weight_version, got, expected.tolist())

"""The receiving end of the weight sync, inside each vLLM worker.

vLLM mixes this class into its workers (``LLM(worker_extension_cls=…)``) and runs its methods
with ``LLM.collective_rpc``: the supported way to reach a worker, no patching of vLLM.  The
actor's rank 0 broadcasts every parameter (full, in the engine's dtype) on a process group
whose rank 0 it is; each worker receives them one by one and streams them into
``model_runner.reload_weights``, which loads checkpoint-format tensors (the engine shards them
for tensor parallelism and repacks them for its CPU kernels).
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import torch

from rlhf_dist.engine.dist import group_store, standalone_group


class WeightReceiver:
    """Methods of a vLLM worker (``self`` is the worker: ``rank``, ``model_runner``)."""

    def init_weight_group(self, host: str, port: int, rank_offset: int, world_size: int,
                          backend: str, timeout_s: float, local_host: Optional[str] = None
                          ) -> None:
        """Join the weight group as rank ``rank_offset`` + this worker's rank (gloo bound to
        ``local_host``, this node's address)."""
        store = group_store(host, port, is_master=False, timeout_s=timeout_s)
        self._weight_group = standalone_group(store, rank_offset + self.rank, world_size,
                                              backend, timeout_s, host=local_host)
        self._weight_store = store  # the group needs its store alive
        # gloo moves CPU tensors (also what colocated engines use), NCCL device ones
        self._weight_device = self.model_runner.device if backend == "nccl" else "cpu"
        self._weight_group.broadcast(torch.zeros(1, device=self._weight_device), 0).wait()

    def _received(self, specs: Sequence[Tuple[str, str, List[int]]]
                  ) -> Iterator[Tuple[str, torch.Tensor]]:
        for name, dtype, shape in specs:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=self._weight_device)
            self._weight_group.broadcast(tensor, 0).wait()
            yield name, tensor

    def receive_weights(self, specs: Sequence[Tuple[str, str, List[int]]]) -> None:
        """Receive ``specs`` (name, dtype, shape: the sender's order) and load them."""
        self.model_runner.reload_weights(weights_iterator=self._received(specs))

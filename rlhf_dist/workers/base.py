"""What every role actor does before it holds a model: join its role's process group."""
from __future__ import annotations

import os
import socket
from typing import Any, Dict, Tuple

import torch

from rlhf_dist.config import Config


class DistributedWorker:
    """Base of the role actors.  Rank 0 publishes its address and a free port; every rank then
    calls :meth:`init_distributed` (gloo on CPU, NCCL on GPU) and builds its engine."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rank, self.world_size = 0, 1
        if not torch.cuda.is_available():
            # Ranks of several roles share the cores of a CPU machine; one thread each avoids
            # oversubscription (torch's default is one thread per core per process).
            torch.set_num_threads(1)

    def master_address(self) -> Tuple[str, int]:
        import ray

        # Ray reports the node's routable address (not loopback): ranks on other nodes use it.
        address = ray.util.get_node_ip_address()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
            return address, sock.getsockname()[1]

    def init_distributed(self, rank: int, world_size: int, master_addr: str,
                         master_port: int) -> None:
        from rlhf_dist.engine.dist import init_distributed

        # Ray gives each GPU actor its own CUDA_VISIBLE_DEVICES, so the local device is 0.
        os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": "0",
                           "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)})
        init_distributed(timeout_s=self.cfg.resources.timeout_s)
        self.rank, self.world_size = rank, world_size

    def tokenizer(self):
        from rlhf_dist.models import load_tokenizer

        if not hasattr(self, "_tokenizer"):
            self._tokenizer = load_tokenizer(self.cfg.model, field_prefix="model")
        return self._tokenizer

    def ping(self) -> int:
        return self.rank

    def location(self) -> Dict[str, Any]:
        """Where this rank runs: its Ray node id, the node's address and the process id
        (placement checks and diagnostics; e.g. a SPREAD group should span several nodes)."""
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(),
                "ip": ray.util.get_node_ip_address(), "pid": os.getpid()}

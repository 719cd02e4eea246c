"""What every role actor does before it holds a model: join its role's process group."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Dict, Tuple

import torch

from rlhf_dist.config import Config
from rlhf_dist.models import load_tokenizer


class DistributedWorker:
    """Base of the role actors.  Rank 0 opens the group's rendezvous store and publishes its
    address; every rank then calls :meth:`init_distributed` (gloo on CPU, NCCL on GPU) and
    builds its engine."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rank, self.world_size = 0, 1
        self._store = None
        if not torch.cuda.is_available():
            # Ranks of several roles share the cores of a CPU machine; one thread each avoids
            # oversubscription (torch's default is one thread per core per process).
            torch.set_num_threads(1)

    @property
    def _timeout(self) -> timedelta:
        return timedelta(seconds=self.cfg.resources.timeout_s)

    def master_address(self) -> Tuple[str, int]:
        """Rank 0: start the group's TCP store on a port the OS picks, and keep it listening.
        (Probing a free port and letting torch bind it later left a window in which another
        process could take it: EADDRINUSE when several groups or jobs start at once.)"""
        import ray
        from torch.distributed import TCPStore

        # Ray reports the node's routable address (not loopback): ranks on other nodes use it.
        address = ray.util.get_node_ip_address()
        self._store = TCPStore(
            address, 0, is_master=True, wait_for_workers=False, timeout=self._timeout
        )
        return address, self._store.port

    def init_distributed(self, rank: int, world_size: int, master: Tuple[str, int]) -> None:
        """Join the group whose store rank 0's :meth:`master_address` started."""
        import torch.distributed as tdist
        from torch.distributed import TCPStore

        from rlhf_dist.engine.dist import (
            backend_for_device,
            import_deepspeed,
            local_device,
            require_one_device,
        )

        master_addr, master_port = master
        # Ray gives each GPU actor its own CUDA_VISIBLE_DEVICES, so the local device is 0.
        os.environ.update(
            {
                "RANK": str(rank),
                "WORLD_SIZE": str(world_size),
                "LOCAL_RANK": "0",
                "MASTER_ADDR": master_addr,
                "MASTER_PORT": str(master_port),
            }
        )
        store = (
            self._store
            if rank == 0
            else TCPStore(master_addr, master_port, is_master=False, timeout=self._timeout)
        )
        if torch.cuda.is_available():
            require_one_device(
                torch.cuda.device_count(),
                f"{getattr(self, 'role', type(self).__name__)} rank {rank}",
            )
            torch.cuda.set_device(local_device())
        tdist.init_process_group(
            backend_for_device(),
            store=store,
            rank=rank,
            world_size=world_size,
            timeout=self._timeout,
        )
        # deepspeed.comm adopts the initialised default group (its "user initialised
        # torch.distributed" path); it must exist before any engine is built (ZeRO-3 reads
        # the world size at model construction).
        import_deepspeed().init_distributed(
            dist_backend=backend_for_device(),
            auto_mpi_discovery=False,
            timeout=self._timeout,
            verbose=False,
        )
        self.rank, self.world_size = rank, world_size

    def tokenizer(self):
        if not hasattr(self, "_tokenizer"):
            self._tokenizer = load_tokenizer(self.cfg.model, field_prefix="model")
        return self._tokenizer

    def ping(self) -> int:
        return self.rank

    def location(self) -> Dict[str, Any]:
        return location()


def location() -> Dict[str, Any]:
    """Where the calling Ray actor runs: its Ray node id, the node's address and the process
    id (placement checks and diagnostics; e.g. a SPREAD group should span several nodes)."""
    import ray

    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
    }

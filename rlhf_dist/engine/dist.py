"""torch.distributed set-up: gloo on CPU, NCCL on GPU, and a lone process as rank 0 of 1."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import warnings
from datetime import timedelta
from typing import Dict, List, Optional

import torch
import torch.distributed as tdist

# Every process that builds engines imports this module before DeepSpeed. Without CUDA, tell
# DeepSpeed the accelerator it would detect anyway, so that each rank does not warn about it;
# and DeepSpeed's ZeRO collectives call torch.distributed functions that torch 2.13 deprecates
# with a FutureWarning per process (not ours to change: hidden, by exact message).
if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
warnings.filterwarnings(
    "ignore",
    category=FutureWarning,
    message=r"`torch\.distributed\."
    r"(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated",
)


def import_deepspeed():
    """``import deepspeed``, without the ``mlflow`` import its autotuner makes at import time
    where mlflow is installed (~0.85 s of pandas and mlflow in every rank and Ray worker; we
    never autotune).  ``mlflow`` stays importable afterwards (``logging.backend=mlflow``)."""
    if "deepspeed" in sys.modules or "mlflow" in sys.modules:
        import deepspeed

        return deepspeed
    sys.modules["mlflow"] = None  # `import mlflow` raises ImportError: has_mlflow = False
    try:
        import deepspeed
    finally:
        del sys.modules["mlflow"]
    return deepspeed


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default_single_process_env() -> None:
    """Without a launcher DeepSpeed would look for MPI: declare ourselves rank 0 of 1."""
    if "RANK" in os.environ:
        return
    os.environ.update(
        {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    )
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def require_one_device(count: int, where: str) -> None:
    """A GPU worker (one rank of a Ray group) must see exactly one device: Ray sets its
    ``CUDA_VISIBLE_DEVICES`` to the GPU it was given.  Any other count means a placement or
    environment fault (ranks would pile onto device 0), reported naming the worker."""
    if count != 1:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
        raise RuntimeError(
            f"{where}: sees {count} CUDA devices (CUDA_VISIBLE_DEVICES="
            f"{visible}); a GPU worker must see exactly its one"
        )


def backend_for_device() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def local_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def share_cpu_threads() -> None:
    """On CPU, split the cores among the ranks of this machine (torch would give every process
    all of them, and oversubscribed ranks spin instead of computing).  OMP_NUM_THREADS wins."""
    if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_ranks, 1)))


def init_distributed(timeout_s: float = 1800.0) -> None:
    """Initialise the default process group once (idempotent)."""
    _default_single_process_env()
    if tdist.is_available() and tdist.is_initialized():
        return
    deepspeed = import_deepspeed()
    if torch.cuda.is_available():
        torch.cuda.set_device(local_device())
    share_cpu_threads()
    deepspeed.init_distributed(
        dist_backend=backend_for_device(),
        auto_mpi_discovery=False,
        timeout=timedelta(seconds=timeout_s),
        verbose=False,
    )
    release_shm_names()


def release_shm_names() -> None:
    """DeepSpeed's CPU all-reduce (its shm_comm op, used when every rank is on one machine)
    gives each rank a ~66 MB file in /dev/shm and never removes it: a machine that runs many
    jobs fills its shared memory, where Ray also keeps its object store.  When init returns,
    each rank has mapped its peers' files; after a barrier the names can go (the mappings live
    until the processes exit).  Collective on CPU; nothing on GPU."""
    if torch.cuda.is_available() or not tdist.is_initialized():
        return
    name = (
        f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
        f"{os.environ.get('MASTER_PORT', '')}_{rank()}"
    )
    barrier()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join("/dev/shm", name))


def rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()


def all_reduce_mean(metrics: Dict[str, float]) -> Dict[str, float]:
    """Average a dict of floats over ranks (same keys on every rank)."""
    n = world_size()
    return {key: value / n for key, value in all_reduce_sum(metrics).items()}


def broadcast_object(obj):
    """Rank 0's python object on every rank."""
    if not tdist.is_initialized() or world_size() == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(wait: bool = True) -> None:
    """Tear the group down at the end of a job (a live group aborts the process on exit);
    ``wait=False`` skips the barrier (a failing rank must not wait for ranks that wait for it).

    Through ``deepspeed.comm`` when DeepSpeed is loaded: it also drops DeepSpeed's cached
    sub-groups (its clone of the world group…), which would otherwise point at the destroyed
    group and break the next job started in the same process (a demo running SFT then DPO)."""
    if not tdist.is_initialized():
        return
    if wait:
        tdist.barrier()
    ds_comm = sys.modules.get("deepspeed.comm")
    if ds_comm is not None and ds_comm.is_initialized():
        ds_comm.destroy_process_group()
    else:
        tdist.destroy_process_group()


def ranks_with(flag: bool) -> List[int]:
    """The ranks on which ``flag`` is set (every rank calls it: one small all-reduce)."""
    if not tdist.is_initialized() or world_size() == 1:
        return [0] if flag else []
    votes = all_reduce_sum({f"rank{r}": float(flag and r == rank()) for r in range(world_size())})
    return [r for r in range(world_size()) if votes[f"rank{r}"] > 0]


def all_reduce_sum(metrics: Dict[str, float]) -> Dict[str, float]:
    """Sum a dict of floats over ranks (same keys on every rank)."""
    if not tdist.is_initialized() or world_size() == 1 or not metrics:
        return dict(metrics)
    keys = sorted(metrics)
    values = torch.tensor(
        [float(metrics[k]) for k in keys], dtype=torch.float64, device=local_device()
    )
    tdist.all_reduce(values)
    return dict(zip(keys, values.tolist()))


def all_reduce_sum_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks of a CPU tensor of the same shape on every rank."""
    if not tdist.is_initialized() or world_size() == 1:
        return tensor.clone()
    summed = tensor.to(local_device(), copy=True)
    tdist.all_reduce(summed)
    return summed.to(tensor.device)


def standalone_group(
    store: "tdist.Store",
    rank: int,
    world_size: int,
    backend: str,
    timeout_s: float,
    prefix: str = "weights",
    host: Optional[str] = None,
):
    """A process group outside the default one (which a rank may already belong to, as the
    actor's ZeRO group): the actor's rank 0 and the rollout engines' workers, gloo on CPU,
    NCCL on GPU.  Gloo's construction waits for all ``world_size`` ranks, NCCL connects on
    the first collective: callers do one broadcast to know the group is complete.

    ``host``: the address gloo binds (this rank's node address, from Ray).  Left to itself
    gloo binds whatever the hostname resolves to — 127.0.1.1 on many clusters, where a peer
    on another node then waits until the timeout.  ``GLOO_SOCKET_IFNAME``, if set, wins."""
    timeout = timedelta(seconds=timeout_s)
    prefixed = tdist.PrefixStore(prefix, store)
    if backend == "nccl":
        options = tdist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return tdist.ProcessGroupNCCL(prefixed, rank, world_size, options)
    if host is None or os.environ.get("GLOO_SOCKET_IFNAME"):
        return tdist.ProcessGroupGloo(prefixed, rank, world_size, timeout)
    options = tdist.ProcessGroupGloo._Options()
    options._timeout = timeout
    options._devices = [tdist.ProcessGroupGloo.create_device(hostname=host)]
    return tdist.ProcessGroupGloo(prefixed, rank, world_size, options)


def group_store(host: str, port: int, is_master: bool, timeout_s: float) -> "tdist.TCPStore":
    """The rendezvous store of a :func:`standalone_group`; the master binds ``port`` (0: the
    OS picks one; read it back from ``.port``)."""
    return tdist.TCPStore(
        host,
        port,
        is_master=is_master,
        wait_for_workers=False,
        timeout=timedelta(seconds=timeout_s),
    )

"""The ``resources`` section: Ray placement of the role groups and of the vLLM rollout
engines (split from ``sections.py``, which holds the other sections)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from rlhf_dist.config.checks import _choice, _positive, _require


@dataclass
class RoleResources:
    """Devices of one Ray role: ``num_nodes × devices_per_node`` ranks (CPU processes on CPU).
    ``offload_when_idle``: the role's weights, gradients and optimizer states wait in CPU
    memory between its calls (reloaded before each call, offloaded after), leaving the device
    to colocated roles."""

    num_nodes: int = 1  # nodes the role's ranks span
    devices_per_node: int = 1  # ranks (GPUs, or CPU processes) per node
    cpus_per_worker: float = 1.0  # CPUs Ray reserves for each rank
    # keep the role's weights, gradients and optimizer states in CPU memory between its calls
    offload_when_idle: bool = False

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.devices_per_node


@dataclass
class RolloutResources:
    """The vLLM engines of ``rollout.backend=vllm``: ``num_engines`` Ray actors, each one
    vLLM engine over ``tensor_parallel_size`` devices (CPU: processes)."""

    num_engines: int = 1  # vLLM engines (rollout.backend=vllm), each a Ray actor
    tensor_parallel_size: int = 1  # devices per engine (tensor parallel; CPU: processes)
    cpus_per_worker: float = 1.0  # CPUs Ray reserves for each engine device
    # GPU: fraction of each device's memory vLLM may take (weights + KV cache)
    gpu_memory_utilization: float = 0.5
    # longest prompt + response an engine serves; null: data.max_prompt_length +
    # rollout.max_new_tokens
    max_model_len: Optional[int] = None
    # CPU: GiB of KV cache per engine (vLLM's VLLM_CPU_KVCACHE_SPACE)
    kv_cache_gb: float = 1.0
    # most sequences an engine batches at once (vLLM's max_num_seqs)
    max_num_seqs: int = 256
    # true: no CUDA graphs / torch.compile (faster start, slower decode); null: eager on CPU
    # (compiling took 40 s for 10 % more tokens/s at 8 x 512 here), compiled on GPU
    enforce_eager: Optional[bool] = None

    def check(self) -> None:
        for name in ("num_engines", "tensor_parallel_size", "cpus_per_worker", "kv_cache_gb",
                     "max_num_seqs"):
            _positive(f"resources.rollout.{name}", getattr(self, name))
        _require(0.0 < self.gpu_memory_utilization <= 1.0,
                 "resources.rollout.gpu_memory_utilization",
                 f"must be in (0, 1], got {self.gpu_memory_utilization}")
        _require(self.max_model_len is None or self.max_model_len > 0,
                 "resources.rollout.max_model_len", f"must be > 0, got {self.max_model_len}")

    @property
    def world_size(self) -> int:
        return self.num_engines * self.tensor_parallel_size


@dataclass
class ResourcesConfig:
    """Ray placement per role.  ``ray_address: null`` starts a local Ray and stops it after."""

    # an existing Ray cluster to join (e.g. auto); null = start a local one
    ray_address: Optional[str] = None
    # PACK | SPREAD: Ray placement of the roles' bundles over the nodes
    placement_strategy: str = "PACK"
    # the actor and the reference share devices (equal resources needed)
    colocate_actor_ref: bool = False
    # the critic and the reward model share devices (equal resources needed)
    colocate_critic_reward: bool = False
    # vLLM engines on the actor's devices, asleep (no weights, no KV cache) while it trains
    colocate_rollout: bool = False
    # seconds any remote call may take before the run stops naming the worker
    timeout_s: float = 600.0
    # a lost worker / engine (or a call past timeout_s): recreate every group, go on from the
    # last checkpoint, at most this many times per run (0: stop with the error)
    max_restarts: int = 0
    actor: RoleResources = field(default_factory=RoleResources)
    critic: RoleResources = field(default_factory=RoleResources)
    reward: RoleResources = field(default_factory=RoleResources)
    reference: RoleResources = field(default_factory=RoleResources)
    rollout: RolloutResources = field(default_factory=RolloutResources)

    def __post_init__(self):
        self.rollout.check()
        _choice("resources.placement_strategy", self.placement_strategy,
                ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"])
        _positive("resources.timeout_s", self.timeout_s)
        _positive("resources.max_restarts", self.max_restarts, allow_zero=True)
        for role in ("actor", "critic", "reward", "reference"):
            res = getattr(self, role)
            for name in ("num_nodes", "devices_per_node", "cpus_per_worker"):
                _positive(f"resources.{role}.{name}", getattr(res, name))

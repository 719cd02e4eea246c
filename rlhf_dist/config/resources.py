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

    # multiplies devices_per_node into the role's ranks; which nodes hold them is up to Ray
    # (resources.placement_strategy: one bundle per rank), not pinned to this many nodes
    num_nodes: int = 1
    devices_per_node: int = 1  # ranks (one GPU each, or CPU processes) per node
    cpus_per_worker: float = 1.0  # CPUs Ray reserves for each rank (colocated roles share them)
    # keep the role's weights, gradients and optimizer states in CPU memory between its calls
    # (reloaded for each call; not with deepspeed.offload_param; logs perf/<role>_offload_s)
    offload_when_idle: bool = False

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.devices_per_node


@dataclass
class RolloutResources:
    """The vLLM engines of ``rollout.backend=vllm``: ``num_engines`` Ray actors, each one
    vLLM engine over ``tensor_parallel_size`` devices (CPU: processes)."""

    # vLLM engines (rollout.backend=vllm), each a Ray actor; prompts are split over them
    num_engines: int = 1
    tensor_parallel_size: int = 1  # devices per engine (tensor parallel; CPU: processes)
    # CPUs Ray reserves for each engine device (colocate_rollout: a share of the actor's)
    cpus_per_worker: float = 1.0
    # GPU: fraction of each device's memory vLLM may take (weights + KV cache)
    gpu_memory_utilization: float = 0.5
    # longest prompt + response an engine serves; null: data.max_prompt_length +
    # rollout.max_new_tokens (with env.name: env.max_trajectory_tokens - 1 + that, if longer)
    max_model_len: Optional[int] = None
    # CPU: GiB of KV cache per engine (passed as vLLM's kv_cache_memory_bytes)
    kv_cache_gb: float = 1.0
    # most sequences an engine batches at once (vLLM's max_num_seqs)
    max_num_seqs: int = 256
    # true: no CUDA graphs / torch.compile (faster start, slower decode); null: eager on CPU
    # (compiling took 40 s for 10 % more tokens/s at 8 x 512 here), compiled on GPU
    enforce_eager: Optional[bool] = None

    def check(self) -> None:
        for name in (
            "num_engines",
            "tensor_parallel_size",
            "cpus_per_worker",
            "kv_cache_gb",
            "max_num_seqs",
        ):
            _positive(f"resources.rollout.{name}", getattr(self, name))
        _require(
            0.0 < self.gpu_memory_utilization <= 1.0,
            "resources.rollout.gpu_memory_utilization",
            f"must be in (0, 1], got {self.gpu_memory_utilization}",
        )
        _require(
            self.max_model_len is None or self.max_model_len > 0,
            "resources.rollout.max_model_len",
            f"must be > 0, got {self.max_model_len}",
        )

    @property
    def world_size(self) -> int:
        return self.num_engines * self.tensor_parallel_size


@dataclass
class ResourcesConfig:
    """Ray placement per role.  ``ray_address: null`` starts a local Ray and stops it after."""

    # an existing Ray cluster to join (e.g. auto); null = $RAY_ADDRESS if set, else a local
    # Ray the job starts and stops
    ray_address: Optional[str] = None
    # PACK | SPREAD | STRICT_PACK | STRICT_SPREAD: Ray's strategy for each role's placement
    # group (one bundle per rank) over the nodes
    placement_strategy: str = "PACK"
    # the actor and the reference share devices, half of each bundle (equal resources needed;
    # not with a shared LoRA reference)
    colocate_actor_ref: bool = False
    # the reference model lives in the actor's own processes, a frozen engine next to the
    # policy on each actor rank (verl's actor+ref worker): no reference group, no transfer
    # of the experience to it; resources.reference is then unused
    reference_in_actor: bool = False
    # the critic and the reward model share devices, half of each bundle (equal resources
    # needed; only when both exist)
    colocate_critic_reward: bool = False
    # one vLLM engine on each actor device (GPU only; rollout.num_engines = the actor's ranks,
    # rollout.tensor_parallel_size 1), asleep (vLLM level 2: no weights, no KV cache) while
    # the other roles work
    colocate_rollout: bool = False
    # seconds any remote call may wait before its worker counts as lost (see max_restarts),
    # and a role's placement may wait before the run stops
    timeout_s: float = 600.0
    # a lost worker / engine (or a call past timeout_s): recreate every group, go on from the
    # last checkpoint, at most this many times per run (0: stop with the error)
    max_restarts: int = 0
    # the policy's ranks (the PPO/GRPO actor; DPO on Ray: the trained model)
    actor: RoleResources = field(default_factory=RoleResources)
    # the critic's ranks (only with ppo.advantage_estimator=gae)
    critic: RoleResources = field(default_factory=RoleResources)
    # the reward model's ranks (only with ppo.use_reward_model)
    reward: RoleResources = field(default_factory=RoleResources)
    # the frozen reference's ranks (none with a shared LoRA base; DPO on Ray: = actor's ranks)
    reference: RoleResources = field(default_factory=RoleResources)
    # the vLLM rollout engines (only with rollout.backend=vllm)
    rollout: RolloutResources = field(default_factory=RolloutResources)

    def __post_init__(self):
        self.rollout.check()
        _choice(
            "resources.placement_strategy",
            self.placement_strategy,
            ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"],
        )
        _positive("resources.timeout_s", self.timeout_s)
        _positive("resources.max_restarts", self.max_restarts, allow_zero=True)
        for role in ("actor", "critic", "reward", "reference"):
            res = getattr(self, role)
            for name in ("num_nodes", "devices_per_node", "cpus_per_worker"):
                _positive(f"resources.{role}.{name}", getattr(res, name))

"""Start (or join) Ray and lay out the role groups on placement groups."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import ray

from rlhf_dist.config import Config
from rlhf_dist.workers.worker_group import place_bundles, role_bundles
from rlhf_dist.workers.role_groups import (
    ActorGroup,
    CriticGroup,
    ReferenceGroup,
    RewardGroup,
    RoleGroups,
)
from rlhf_dist.workers.role_workers import ActorWorker, CriticWorker, ReferenceWorker, RewardWorker

log = logging.getLogger(__name__)

# Environment the workers need to behave like the driver (offline W&B/HF, caches).
FORWARDED_ENV_PREFIXES = (
    "WANDB_",
    "HF_",
    "TRANSFORMERS_",
    "TORCH_EXTENSIONS_DIR",
    "RLHF_DIST_",
    "TOKENIZERS_PARALLELISM",
    "NCCL_",
    "GLOO_",
)


def _forwarded_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


# A private instance has no dashboard, so nothing reads its metrics or task-event stream:
# not collecting them takes that periodic work off Ray's daemons and the workers.
LOCAL_SYSTEM_CONFIG = {
    "enable_metrics_collection": False,
    "task_events_report_interval_ms": 0,
    "event_stats": False,
}


def local_ray_options(num_cpus: float) -> Dict[str, Any]:
    """``ray.init`` arguments of the private instance a job starts when it joins none."""
    # address="local": always a private instance, never a cluster `ray start` left running.
    return dict(
        address="local",
        num_cpus=max(int(num_cpus + 0.999), os.cpu_count() or 1),
        include_dashboard=False,
        _system_config=dict(LOCAL_SYSTEM_CONFIG),
        runtime_env={"env_vars": _forwarded_env()},
        log_to_driver=True,
    )


def start_ray(address: Optional[str], num_cpus: float) -> bool:
    """Join ``address`` (or RAY_ADDRESS), else start a local Ray sized for the job.
    Returns whether we started it (and so must stop it)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env={"env_vars": _forwarded_env()}, log_to_driver=True)
        return False
    ray.init(**local_ray_options(num_cpus))
    return True


def cpus_needed(cfg: Config, roles, rollout: Optional[Any] = None) -> float:
    """CPUs the job's Ray instance needs: the ``roles``' workers, the reward-function pool
    and the processes of the ``rollout`` backend (``Rollout.cpus``)."""
    res = cfg.resources
    return (
        (rollout.cpus() if rollout else 0.0)
        + cfg.ppo.reward_workers
        + sum(getattr(res, r).world_size * getattr(res, r).cpus_per_worker for r in roles)
    )


def create_roles(
    cfg: Config,
    with_reward: bool,
    with_critic: bool,
    rollout: Optional[Any] = None,
    with_reference: Optional[bool] = None,
) -> RoleGroups:
    """Placement groups per role (shared by colocated pairs), then the groups, their
    processes started side by side; with ``rollout`` (a
    :class:`~rlhf_dist.rollout.interface.Rollout`) also the processes that backend asks for
    (``bundles``; on the actor's bundles when it shares the actor's devices,
    ``actor_share``).  ``with_reference``: a reference group (default
    ``cfg.reference_group``)."""
    with_reference = cfg.reference_group if with_reference is None else with_reference
    res, timeout = cfg.resources, cfg.resources.timeout_s
    roles = RoleGroups()

    def placed(name: str, bundles: List[Dict[str, float]]):
        pg = place_bundles(bundles, res.placement_strategy, f"rlhf_dist-{name}", timeout)
        roles.placement_groups.append(pg)
        return pg

    try:  # a failure part-way (e.g. a role that cannot be placed) frees what was created
        actor_pg = placed("actor", role_bundles(res.actor))
        # shares of an actor bundle: halves with a colocated reference, less the engine's
        share_ar = 0.5 if res.colocate_actor_ref else 1.0
        left = 1.0 - (rollout.actor_share() if rollout else 0.0)
        roles.actor = ActorGroup(
            "actor", ActorWorker, res.actor, actor_pg, (cfg,), timeout, share_ar * left, wait=False
        )
        if with_reference:
            ref_pg = (
                actor_pg
                if res.colocate_actor_ref
                else placed("reference", role_bundles(res.reference))
            )
            roles.reference = ReferenceGroup(
                "reference",
                ReferenceWorker,
                res.actor if res.colocate_actor_ref else res.reference,
                ref_pg,
                (cfg,),
                timeout,
                share_ar * (left if res.colocate_actor_ref else 1.0),
                wait=False,
            )
        colocate_cr = res.colocate_critic_reward and with_reward and with_critic
        share_cr = 0.5 if colocate_cr else 1.0
        critic_pg = None
        if with_critic:
            critic_pg = placed("critic", role_bundles(res.critic))
            roles.critic = CriticGroup(
                "critic", CriticWorker, res.critic, critic_pg, (cfg,), timeout, share_cr, wait=False
            )
        if with_reward:
            reward_pg = critic_pg if colocate_cr else placed("reward", role_bundles(res.reward))
            roles.reward = RewardGroup(
                "reward",
                RewardWorker,
                res.critic if colocate_cr else res.reward,
                reward_pg,
                (cfg,),
                timeout,
                share_cr,
                wait=False,
            )
        for group in roles.all():  # their processes started side by side
            group.wait_started()
        if rollout is not None:
            bundles = rollout.bundles()
            rollout.start(roles.actor, placed("rollout", bundles) if bundles else actor_pg)
            roles.rollout = rollout
    except BaseException:
        roles.kill()
        raise
    return roles


def stop(roles: Optional[RoleGroups], started_ray: bool) -> None:
    """Kill the groups, and Ray itself if this job started it."""
    if roles is not None:
        roles.kill()
    if started_ray:
        ray.shutdown()

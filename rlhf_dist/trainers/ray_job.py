"""What the Ray drivers (PPO/GRPO, DPO on Ray) share on top of the lifecycle: a local Ray or
a cluster joined, the role groups in ``self.roles`` (their trained groups are the checkpoint),
and recovery from a lost worker by recreating them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from rlhf_dist.models._common import require_model_dir
from rlhf_dist.trainers.lifecycle import Job, Metrics
from rlhf_dist.workers.errors import WorkerLost


class RayJob(Job):
    roles = None  # workers.cluster.RoleGroups, made by build()
    started_ray = False  # whether this job started Ray (and so stops it)

    def check_model_paths(self, sections) -> None:
        """The ``name_or_path`` of each model section the job's workers will load, checked
        on the driver before Ray starts: one line naming the key, not a worker's failure."""
        for name in sections:
            require_model_dir(getattr(self.cfg, name).name_or_path, f"{name}.name_or_path")

    def start_ray(self, num_cpus: float) -> None:
        """Join ``resources.ray_address`` or start a local Ray; lost workers recoverable."""
        from rlhf_dist.workers.cluster import start_ray

        res = self.cfg.resources
        self.started_ray = start_ray(res.ray_address, num_cpus)
        self.recoverable, self.max_restarts = (WorkerLost,), res.max_restarts

    def start_metrics(self) -> Metrics:
        """Placement, the trained groups' sizes and memory, and where the reference is: the
        actor's base (``resources/reference_shared_base``) or a frozen engine in the actor's
        processes (``resources/reference_in_actor``)."""
        return {
            **self.roles.placement_metrics(),
            **self.roles.size_metrics(),
            "resources/reference_shared_base": float(self.cfg.shared_reference),
            "resources/reference_in_actor": float(self.cfg.resources.reference_in_actor),
        }

    def driver_state(self) -> Dict[str, Any]:
        """What the driver itself adds to a checkpoint (besides the trained groups)."""
        return {}

    def load_driver_state(self, state: Dict[str, Any]) -> None:
        """Restore :meth:`driver_state` from a checkpoint's trainer state."""

    def save_to(self, staging: Path) -> Dict[str, Any]:
        self.roles.save_trained(staging)
        return self.driver_state()

    def load_from(self, path: Path, state: Dict[str, Any]) -> None:
        self.roles.load_trained(path)
        self.load_driver_state(state)

    def teardown(self) -> None:
        self.roles.kill()

    def close(self, failed: bool) -> None:
        from rlhf_dist.workers.cluster import stop

        stop(self.roles, self.started_ray)

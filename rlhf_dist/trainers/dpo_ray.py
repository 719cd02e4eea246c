"""DPO on Ray: the PPO actor group (same ZeRO-sharded policy code path) and the reference
group, driven with the launcher DPO's data path and loss (``dpo_datasets``, ``dpo_batch_loss``:
DPO, SimPO/ORPO, KTO) — so the same data, seed and config give the same losses in both
modes."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from rlhf_dist.config import Config

# whether a reference group is created: decided (and checked) by config
from rlhf_dist.config.sizes import ray_dpo_reference_group as reference_group
from rlhf_dist.protocol import Batch
from rlhf_dist.trainers import batches as B
from rlhf_dist.trainers.ray_job import RayJob
from rlhf_dist.utils import seed_everything


class RayDPOTrainer(RayJob):
    job = "dpo-ray"

    def __init__(self, cfg: Config):
        self.cfg, self.out = cfg, Path(cfg.output_dir)
        sizes = cfg.ray_dpo_sizes  # computed and checked by config, before Ray starts
        self.world, self.accum = sizes.world, sizes.accumulation
        self.ref_start: Optional[float] = None

    def start(self) -> None:
        from rlhf_dist.models import load_tokenizer
        from rlhf_dist.objectives import dpo_datasets

        cfg = self.cfg
        seed_everything(cfg.seed)
        self.check_model_paths(
            ["model"]
            + (["ref_model"] if cfg.dpo.needs_reference and not cfg.shared_reference else [])
        )
        self.tokenizer = load_tokenizer(cfg.model, field_prefix="model")
        self.train_set, self.eval_set, self.collate, self.data_metrics = dpo_datasets(
            cfg.data, cfg.dpo, self.tokenizer
        )
        self.sampler = B.StepSampler.for_dataset(
            self.train_set,
            cfg.seed,
            self.world,
            cfg.train.micro_batch_size,
            self.accum,
            cfg.train.group_by_length,
        )
        self.total_steps = self.sampler.steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps > 0:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        groups = 2 if reference_group(cfg) else 1
        self.start_ray(groups * self.world * cfg.resources.actor.cpus_per_worker)

    def build(self) -> None:
        from rlhf_dist.workers.cluster import create_roles
        from rlhf_dist.workers.role_groups import wait_all

        self.roles = create_roles(
            self.cfg, with_reward=False, with_critic=False, with_reference=reference_group(self.cfg)
        )
        builds = [self.roles.actor.build(self.cfg.train, self.total_steps)]
        if self.roles.reference:
            builds.append(self.roles.reference.build())
        wait_all(builds)
        self.reference = (
            self.roles.reference_calls()
            if self.cfg.dpo.needs_reference
            else NoReference(self.cfg.dpo)
        )
        if self.ref_start is None:
            self.ref_start = self.reference.state_checksum()

    def start_metrics(self) -> Dict[str, float]:
        return {**super().start_metrics(), **self.data_metrics}

    def train_step(self) -> Dict[str, float]:
        per_rank = self.reference.sequence_logps(self.step_micro_batches())
        metrics = {f"train/{k}": v for k, v in self.roles.actor.dpo_update(per_rank).items()}
        return {**metrics, **self.roles.offload_metrics(self.cfg.resources)}

    def evaluate(self) -> Optional[Dict[str, float]]:
        """The launcher DPO's eval: the same rank shares of the eval split, the same sums."""
        if self.eval_set is None:
            return None
        size = self.cfg.train.eval_batch_size
        per_rank = [
            [
                Batch.from_dict(b)
                for b in B.iterate(
                    self.eval_set,
                    B.eval_micro_batches(len(self.eval_set), rank, self.world, size),
                    self.collate,
                )
            ]
            for rank in range(self.world)
        ]
        per_rank = self.reference.sequence_logps(per_rank)
        return {f"eval/{k}": v for k, v in self.roles.actor.dpo_eval(per_rank).items()}

    def step_micro_batches(self) -> List[List[Batch]]:
        """Rank r's micro-batches of this step, exactly as the launcher trainer's rank r."""
        return [
            [
                Batch.from_dict(b)
                for b in B.iterate(
                    self.train_set, self.sampler.micro_batches(self.step, rank), self.collate
                )
            ]
            for rank in range(self.world)
        ]

    def end_metrics(self) -> Dict[str, float]:
        """CRC32 of the reference's full weights (roles.state_checksum): equal unless
        something wrote into the frozen model (none for SimPO / ORPO)."""
        if self.ref_start is None:
            return {}
        return {
            "ref/checksum_start": self.ref_start,
            "ref/checksum_end": self.reference.state_checksum(),
        }

    def export(self) -> None:
        self.roles.actor.export_hf(str(self.out / "model"))


class NoReference:
    """The reference calls of DPO on Ray for a loss that reads no reference (SimPO, ORPO):
    zero rows in the layout's shape, no group, no model."""

    def __init__(self, dpo):
        self.dpo = dpo

    def sequence_logps(self, per_rank: List[List[Batch]]) -> List[List[Batch]]:
        from rlhf_dist.objectives import no_reference_rows

        return [
            [m.with_(ref_logps=no_reference_rows(m, self.dpo)) for m in micro] for micro in per_rank
        ]

    def state_checksum(self) -> None:
        return None


def run(cfg: Config):
    return RayDPOTrainer(cfg).fit()

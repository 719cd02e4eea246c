"""DPO on Ray: the PPO actor group (same ZeRO-sharded policy code path) and the reference
group, driven with the launcher DPO's data path and loss (``dpo_objective``) — so the same
data, seed and config give the same losses in both modes."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List

from rlhf_dist.config import Config, ConfigError, save_config, to_dict
from rlhf_dist.protocol import Batch
from rlhf_dist.trainers import batches as B
from rlhf_dist.utils import CheckpointDir, Tracker, progress, seed_everything

log = logging.getLogger(__name__)


class RayDPOTrainer:
    job = "dpo"

    def __init__(self, cfg: Config):
        self.cfg, self.out = cfg, Path(cfg.output_dir)
        self.world = cfg.resources.actor.world_size
        reference = cfg.resources.actor if cfg.resources.colocate_actor_ref \
            else cfg.resources.reference
        if reference.world_size != self.world:
            # rank r of the reference scores the micro-batches of actor rank r
            raise ConfigError(
                f"resources.reference: {reference.world_size} ranks, DPO on Ray needs as many "
                f"as resources.actor ({self.world})")
        cfg.resolve(self.world)
        self.accum = cfg.train.gradient_accumulation_steps

    def setup(self) -> None:
        from rlhf_dist.models import load_tokenizer
        from rlhf_dist.trainers.rm import preference_datasets
        from rlhf_dist.workers.cluster import create_roles, start_ray

        cfg = self.cfg
        seed_everything(cfg.seed)
        self.tokenizer = load_tokenizer(cfg.model, field_prefix="model")
        self.train_set, self.eval_set, self.collate = preference_datasets(
            cfg.data, self.tokenizer, cfg.dpo.layout)
        self.sampler = B.StepSampler.for_dataset(self.train_set, cfg.seed, self.world,
                                                 cfg.train.micro_batch_size, self.accum,
                                                 cfg.train.group_by_length)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps > 0:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        self.started_ray = start_ray(cfg.resources.ray_address,
                                     2 * self.world * cfg.resources.actor.cpus_per_worker)
        self.roles = create_roles(cfg, with_reward=False, with_critic=False)
        self.roles.actor.build(cfg.train, self.total_steps)
        self.roles.reference.build()
        self.ckpt = CheckpointDir(self.out / "checkpoints", cfg.checkpoint.keep_last)
        self.step = 0
        self.resume()
        save_config(cfg)
        self.tracker = Tracker(cfg.logging, str(self.out), to_dict(cfg), True, "dpo-ray")

    def fit(self) -> Dict[str, float]:
        metrics: Dict[str, float] = {}
        bar = self.tracker = None
        failed = True
        try:  # set-up inside: a failure after Ray started still stops the groups and Ray
            self.setup()
            self.tracker.log(self.roles.placement_metrics(), self.step)
            ref_start = self.roles.reference.state_checksum()
            bar = progress(total=self.total_steps, desc="dpo-ray",
                           enabled=self.cfg.logging.progress_bar)
            bar.update(self.step)
            while self.step < self.total_steps:
                metrics = self.train_step()
                self.step += 1
                bar.update(1)
                self.tracker.log(metrics, self.step)
                self.on_schedule()
            if self.eval_set is not None:
                self.tracker.log(self.evaluate(), self.step)
            self.save_checkpoint()
            if self.cfg.checkpoint.export_hf:
                self.roles.actor.export_hf(str(self.out / "model"))
            # CRC32 of the reference's full weights (roles.state_checksum): equal unless
            # something wrote into the frozen model.
            self.tracker.log({"ref/checksum_start": ref_start,
                              "ref/checksum_end": self.roles.reference.state_checksum()},
                             self.step)
            failed = False
        finally:
            if bar is not None:
                bar.close()
            if self.tracker is not None:
                self.tracker.finish(exit_code=int(failed))
            self.shutdown()
        return metrics

    def train_step(self) -> Dict[str, float]:
        per_rank = self.roles.reference.sequence_logps(self.step_micro_batches())
        metrics = {f"train/{k}": v for k, v in self.roles.actor.dpo_update(per_rank).items()}
        return {**metrics, **self.roles.offload_metrics(self.cfg.resources)}

    def on_schedule(self) -> None:
        """Eval and checkpoint every k steps; the last step's are ``fit``'s."""
        train, save_every = self.cfg.train, self.cfg.checkpoint.save_every
        if self.step >= self.total_steps:
            return
        if self.eval_set is not None and train.eval_every and self.step % train.eval_every == 0:
            self.tracker.log(self.evaluate(), self.step)
        if save_every and self.step % save_every == 0:
            self.save_checkpoint()

    def evaluate(self) -> Dict[str, float]:
        """The launcher DPO's eval: the same rank shares of the eval split, the same sums."""
        size = self.cfg.train.eval_batch_size
        per_rank = [[Batch.from_dict(b) for b in B.iterate(
            self.eval_set, B.eval_micro_batches(len(self.eval_set), rank, self.world, size),
            self.collate)] for rank in range(self.world)]
        per_rank = self.roles.reference.sequence_logps(per_rank)
        return {f"eval/{k}": v for k, v in self.roles.actor.dpo_eval(per_rank).items()}

    def step_micro_batches(self) -> List[List[Batch]]:
        """Rank r's micro-batches of this step, exactly as the launcher trainer's rank r."""
        return [[Batch.from_dict(b) for b in
                 B.iterate(self.train_set, self.sampler.micro_batches(self.step, rank),
                           self.collate)]
                for rank in range(self.world)]

    def save_checkpoint(self) -> None:
        self.roles.save_trained(self.ckpt.staging(self.step))
        self.ckpt.commit(self.step, {"global_step": self.step, "config": to_dict(self.cfg)})

    def resume(self) -> None:
        self.ckpt.clean_staging()
        path = self.ckpt.resolve(self.cfg.checkpoint.resume)
        if path is None:
            return
        self.roles.load_trained(path)
        self.step = int(self.ckpt.load_state(path)["global_step"])
        log.info("resumed Ray DPO from %s at step %d", path, self.step)

    def shutdown(self) -> None:
        from rlhf_dist.workers.cluster import stop

        stop(getattr(self, "roles", None), getattr(self, "started_ray", False))


def run(cfg: Config):
    return RayDPOTrainer(cfg).fit()

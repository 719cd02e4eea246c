"""The launcher-mode training loop shared by SFT, RM and DPO.

``fit()`` is a short list of named steps; a stage only says how to build its data and model
and how to turn a micro-batch into a loss (``micro_batch_loss``) and eval sums
(``eval_sums``).  Everything distributed goes through ``rlhf_dist.engine``.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import torch

from rlhf_dist.config import Config, launcher_world_size, save_config, to_dict
from rlhf_dist.engine import dist
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.trainers import batches as B
from rlhf_dist.utils import (CheckpointDir, Tracker, load_rng_state, mean_rows, progress,
                             save_rng_state, seed_everything)

log = logging.getLogger(__name__)
Metrics = Dict[str, float]


class LauncherTrainer:
    """Subclasses set ``job`` and implement the four hooks below."""

    job = "base"

    # ------------------------------------------------------------------ hooks
    def build_datasets(self, tokenizer) -> Tuple[object, Optional[object], object]:
        """(train dataset, eval dataset or None, collate function)."""
        raise NotImplementedError

    def build_model(self, tokenizer) -> torch.nn.Module:
        raise NotImplementedError

    def micro_batch_loss(self, batch: dict) -> Tuple[torch.Tensor, Metrics]:
        raise NotImplementedError

    def eval_sums(self, batch: dict) -> Metrics:
        """Sums over the batch plus their denominator ``count`` (examples, tokens…); the loop
        divides after summing over ranks."""
        raise NotImplementedError

    def count_tokens(self, batch: dict) -> int:
        """Tokens of a micro-batch for ``perf/tokens_per_s``."""
        return int(batch["attention_mask"].sum())

    def before_export(self) -> None:
        """Last chance to touch the trained model (e.g. RM score statistics)."""

    # ------------------------------------------------------------------ set-up
    def __init__(self, cfg: Config):
        self.cfg = cfg
        cfg.resolve(launcher_world_size())  # size errors before any process group exists
        self.out = Path(cfg.output_dir)

    def setup(self) -> None:
        cfg = self.cfg
        dist.init_distributed()
        self.rank, self.world, self.is_main = dist.rank(), dist.world_size(), dist.is_main()
        seed_everything(cfg.seed)
        from rlhf_dist.models import load_tokenizer

        self.tokenizer = load_tokenizer(cfg.model, field_prefix="model")
        self.train_set, self.eval_set, collate = self.build_datasets(self.tokenizer)
        device = dist.local_device()  # DeepSpeed takes inputs where the model is
        self.collate = lambda examples: B.to_device(collate(examples), device)
        self.accum = cfg.train.gradient_accumulation_steps
        self.sampler = B.StepSampler.for_dataset(self.train_set, cfg.seed, self.world,
                                                 cfg.train.micro_batch_size, self.accum,
                                                 cfg.train.group_by_length)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps > 0:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        self.engine = self.build_engines()
        self.ckpt = CheckpointDir(self.out / "checkpoints", cfg.checkpoint.keep_last)
        self.step = 0
        resumed_from = self.resume()
        if self.is_main:
            save_config(cfg)
        self.tracker = Tracker(cfg.logging, str(self.out), to_dict(cfg), self.is_main, self.job)
        if resumed_from is not None:  # last, so that nothing above draws from the restored RNGs
            load_rng_state(resumed_from, self.rank)

    def build_engines(self) -> ModelEngine:
        cfg = self.cfg

        def build():
            torch.manual_seed(cfg.seed)  # identical init on every rank and every rebuild
            return self.build_model(self.tokenizer)

        return ModelEngine.trained(build, cfg.deepspeed, cfg.train, self.world, self.total_steps)

    # ------------------------------------------------------------------ loop
    def fit(self) -> Metrics:
        last: Metrics = {}
        bar = self.tracker = None
        try:
            self.setup()
            bar = progress(total=self.total_steps, desc=self.job,
                           enabled=self.is_main and self.cfg.logging.progress_bar)
            bar.update(self.step)
            while self.step < self.total_steps:
                last = self.train_step(self.next_micro_batches())
                self.step += 1
                bar.update(1)
                self.after_step(last)
            self.finish()
        except BaseException:
            # No barrier on the way out: the other ranks may be stuck in a collective this
            # rank will never join; the launcher sees the exit code and stops them.
            self._close(bar, failed=True)
            raise
        self._close(bar, failed=False)
        return last

    def _close(self, bar, failed: bool) -> None:
        if bar is not None:
            bar.close()
        if self.tracker is not None:
            self.tracker.finish(exit_code=int(failed))
        dist.shutdown(wait=not failed)

    def next_micro_batches(self) -> Iterable[dict]:
        return B.iterate(self.train_set, self.sampler.micro_batches(self.step, self.rank),
                         self.collate)

    def train_step(self, micro_batches: Iterable[dict]) -> Metrics:
        """One optimiser step = ``accum`` micro-batches (DeepSpeed steps on the boundary)."""
        self.engine.train()
        lr = self.engine.lr  # the rate this step uses (the scheduler advances inside step())
        start, rows, tokens = time.perf_counter(), [], 0
        for batch in micro_batches:
            loss, metrics = self.micro_batch_loss(batch)
            self.engine.backward(loss)
            self.engine.step()
            rows.append(metrics)
            tokens += self.count_tokens(batch)
        elapsed = time.perf_counter() - start
        metrics = dist.all_reduce_mean({f"train/{k}": v for k, v in mean_rows(rows).items()})
        total_tokens = dist.all_reduce_sum({"t": float(tokens)})["t"]
        metrics.update({"train/lr": lr,
                        "train/epoch": self.step / self.steps_per_epoch,
                        "perf/tokens_per_s": total_tokens / max(elapsed, 1e-9),
                        "perf/step_time_s": elapsed})
        return metrics

    def after_step(self, metrics: Metrics) -> None:
        """Log, evaluate and save on schedule; the last step's eval and save are ``finish``'s."""
        cfg, before_end = self.cfg, self.step < self.total_steps
        if self.step % cfg.train.log_every == 0 or not before_end:
            self.tracker.log(metrics, self.step)
        if self.eval_set is not None and cfg.train.eval_every and before_end and \
                self.step % cfg.train.eval_every == 0:
            self.tracker.log(self.evaluate(), self.step)
        if cfg.checkpoint.save_every and before_end and \
                self.step % cfg.checkpoint.save_every == 0:
            self.save_checkpoint()

    @torch.no_grad()
    def evaluate(self) -> Metrics:
        self.engine.eval()
        micro = B.eval_micro_batches(len(self.eval_set), self.rank, self.world,
                                     self.cfg.train.eval_batch_size)
        sums: Dict[str, float] = defaultdict(float)
        for batch in B.iterate(self.eval_set, micro, self.collate):
            for key, value in self.eval_sums(batch).items():
                sums[key] += value
        totals = dist.all_reduce_sum(dict(sums))
        count = max(totals.pop("count", 0.0), 1.0)
        result = {f"eval/{k}": v / count for k, v in totals.items()}
        self.engine.train()
        return result

    def finish(self) -> None:
        if self.eval_set is not None:
            self.tracker.log(self.evaluate(), self.step)
        self.save_checkpoint()
        if self.cfg.checkpoint.export_hf:
            self.before_export()
            self.engine.export_hf(self.out / "model", self.tokenizer, self.is_main)
            dist.barrier()

    # ------------------------------------------------------------------ checkpoints
    def trainer_state(self) -> dict:
        epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
        return {"global_step": self.step, "epoch": epoch, "step_in_epoch": in_epoch,
                "micro_batches_consumed": in_epoch * self.accum, "job": self.job,
                "world_size": self.world, "config": to_dict(self.cfg)}

    def save_checkpoint(self) -> None:
        staging = self.ckpt.staging(self.step)
        self.engine.save(staging)
        save_rng_state(staging, self.rank)
        dist.barrier()
        if self.is_main:
            self.ckpt.commit(self.step, self.trainer_state())
        dist.barrier()

    def resume(self) -> Optional[Path]:
        """Restore engine state and step from ``checkpoint.resume``; the checkpoint directory
        (its RNG states are restored last, by ``setup``) or None."""
        path = None
        if self.is_main:
            self.ckpt.clean_staging()
            path = self.ckpt.resolve(self.cfg.checkpoint.resume)
        path = dist.broadcast_object(path)
        if path is None:
            return None
        path = Path(path)
        state = self.ckpt.load_state(path)
        if state["world_size"] != self.world:
            raise ValueError(f"checkpoint.resume: {path} was written by {state['world_size']} "
                             f"ranks, this job has {self.world}")
        self.engine.load(path)
        self.step = int(state["global_step"])
        if self.is_main:
            log.info("resumed from %s at step %d", path, self.step)
        return path

"""The launcher-mode training loop shared by SFT, RM and DPO.

A stage only says how to build its data and model and how to turn a micro-batch into a loss
(``micro_batch_loss``) and eval sums (``eval_sums``); the run around it is the shared
``lifecycle``.  Everything distributed goes through ``rlhf_dist.engine``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import torch

from rlhf_dist.config import Config, launcher_world_size
from rlhf_dist.engine import dist
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.models import load_tokenizer
from rlhf_dist.models.lora import maybe_lora
from rlhf_dist.trainers import batches as B
from rlhf_dist.trainers.lifecycle import Job, Ranks
from rlhf_dist.utils import load_rng_state, mean_rows, save_rng_state, seed_everything

Metrics = Dict[str, float]


class LauncherTrainer(Job):
    """Subclasses set ``job`` and implement the four hooks below; the run around them (resume,
    schedule, checkpoints, tracker) is ``lifecycle.Lifecycle``'s."""

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
        """Tokens of a micro-batch for ``perf/tokens_per_s`` (a padding-free row has no
        padding, nor a mask)."""
        mask = batch.get("attention_mask")
        return int(batch["input_ids"].numel() if mask is None else mask.sum())

    def before_export(self) -> Optional[Metrics]:
        """Last chance to touch the trained model (e.g. RM score statistics); metrics to
        log, if any."""
        return None

    # ------------------------------------------------------------------ set-up
    def __init__(self, cfg: Config):
        self.cfg = cfg
        cfg.resolve(launcher_world_size())  # size errors before any process group exists
        self.out = Path(cfg.output_dir)

    def start(self) -> None:
        cfg = self.cfg
        dist.init_distributed()
        self.rank, self.world = dist.rank(), dist.world_size()
        self.is_main = dist.is_main()
        self.ranks = Ranks(
            self.is_main,
            dist.barrier,
            dist.broadcast_object,
            lambda flag: bool(dist.ranks_with(flag)),
        )
        seed_everything(cfg.seed)
        self.tokenizer = load_tokenizer(cfg.model, field_prefix="model")
        self.train_set, self.eval_set, collate = self.build_datasets(self.tokenizer)
        device = dist.local_device()  # DeepSpeed takes inputs where the model is
        self.collate = lambda examples: B.to_device(collate(examples), device)
        self.accum = cfg.train.gradient_accumulation_steps
        self.sampler = B.StepSampler.for_dataset(
            self.train_set,
            cfg.seed,
            self.world,
            cfg.train.micro_batch_size,
            self.accum,
            cfg.train.group_by_length,
        )
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps > 0:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)

    def build(self) -> None:
        self.engine = self.build_engines()

    def build_engines(self) -> ModelEngine:
        cfg = self.cfg

        def build():
            torch.manual_seed(cfg.seed)  # identical init on every rank and every rebuild
            return maybe_lora(self.build_model(self.tokenizer), cfg.model, "model")

        engine = ModelEngine.trained(build, cfg.deepspeed, cfg.train, self.world, self.total_steps)
        self.model_metrics = engine.size_metrics()
        return engine

    def start_metrics(self) -> Metrics:
        """Parameter counts (all, trainable) and the MiB of parameters and optimizer state
        this rank holds, logged once at the start."""
        return self.model_metrics

    def close(self, failed: bool) -> None:
        # No barrier after a failure: the other ranks may be stuck in a collective this rank
        # will never join; the launcher sees the exit code and stops them.
        dist.shutdown(wait=not failed)

    def next_micro_batches(self) -> Iterable[dict]:
        return B.iterate(
            self.train_set, self.sampler.micro_batches(self.step, self.rank), self.collate
        )

    def train_step(self) -> Metrics:
        """One optimiser step = ``accum`` micro-batches (DeepSpeed steps on the boundary)."""
        micro_batches = self.next_micro_batches()
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
        metrics.update(
            {
                "train/lr": lr,
                "train/epoch": self.step / self.steps_per_epoch,
                "perf/tokens_per_s": total_tokens / max(elapsed, 1e-9),
                "perf/step_time_s": elapsed,
            }
        )
        return metrics

    @torch.no_grad()
    def evaluate(self) -> Optional[Metrics]:
        if self.eval_set is None:
            return None
        self.engine.eval()
        micro = B.eval_micro_batches(
            len(self.eval_set), self.rank, self.world, self.cfg.train.eval_batch_size
        )
        sums: Dict[str, float] = defaultdict(float)
        for batch in B.iterate(self.eval_set, micro, self.collate):
            for key, value in self.eval_sums(batch).items():
                sums[key] += value
        totals = dist.all_reduce_sum(dict(sums))
        count = max(totals.pop("count", 0.0), 1.0)
        result = {f"eval/{k}": v / count for k, v in totals.items()}
        self.engine.train()
        return result

    def export(self) -> Optional[Metrics]:
        metrics = self.before_export()
        self.engine.export_hf(
            self.out / "model", self.tokenizer, self.is_main, self.cfg.checkpoint.merge_lora
        )
        dist.barrier()
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def save_to(self, staging: Path) -> dict:
        self.engine.save(staging)
        save_rng_state(staging, self.rank)
        dist.barrier()  # every rank's files are in before rank 0 seals the directory
        epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
        return {
            "epoch": epoch,
            "step_in_epoch": in_epoch,
            "micro_batches_consumed": in_epoch * self.accum,
            "world_size": self.world,
        }

    def load_from(self, path: Path, state: dict) -> None:
        if state["world_size"] != self.world:
            raise ValueError(
                f"checkpoint.resume: {path} was written by {state['world_size']} "
                f"ranks, this job has {self.world}"
            )
        self.engine.load(path)
        load_rng_state(path, self.rank)  # last: nothing after this draws from the RNGs

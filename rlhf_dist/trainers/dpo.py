"""DPO against a frozen reference, launched by deepspeed: the objective is
``rlhf_dist.objectives.dpo`` (the Ray actor calls the same one)."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Dict, Iterable, List, Optional

import torch

from rlhf_dist.config import Config
from rlhf_dist.engine import dist
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.objectives import (
    PAIR_LAYOUTS,
    dpo_batch_loss,
    dpo_datasets,
    dpo_eval_sums,
    no_reference_rows,
    reference_rows,
)
from rlhf_dist.trainers import batches as B
from rlhf_dist.trainers import dpo_ray
from rlhf_dist.trainers.base import LauncherTrainer

log = logging.getLogger(__name__)


class DPOTrainer(LauncherTrainer):
    job = "dpo"

    def build_datasets(self, tokenizer):
        """Preference pairs, or KTO's unpaired rows (``data_metrics``: their counts and
        class weights, logged at the start)."""
        train, eval_set, collate, self.data_metrics = dpo_datasets(
            self.cfg.data, self.cfg.dpo, tokenizer
        )
        return train, eval_set, collate

    def _model_section(self, reference: bool):
        ref = self.cfg.ref_model
        if reference and ref.name_or_path is not None:
            return ref, "ref_model"
        return self.cfg.model, "model"

    def build_model(self, tokenizer, reference: bool = False):
        from rlhf_dist.models import load_causal_lm

        section, prefix = self._model_section(reference)
        return load_causal_lm(section, tokenizer, field_prefix=prefix)

    def build_engines(self) -> ModelEngine:
        policy = super().build_engines()
        cfg = self.cfg
        self.ref_table: Optional[torch.Tensor] = None
        self.setup_metrics: Dict[str, float] = {}
        if not cfg.dpo.needs_reference:  # SimPO / ORPO: no reference model at all
            self.reference = None
            if self.is_main:
                log.info("dpo.loss_type=%s: no reference model", cfg.dpo.loss_type)
            return policy
        if cfg.shared_reference:  # the policy's base, adapter off: no copy of the model
            self.reference = policy.base()
            if self.is_main:
                log.info(
                    "resources/reference=shared_base: the reference log-probs come from "
                    "the policy with its LoRA adapter disabled"
                )
        else:
            self.reference = self.build_reference()
        self.ref_checksum_start = self.reference_checksum()
        if cfg.dpo.precompute_ref:
            start = time.perf_counter()
            self.ref_table = self.precompute_reference()
            self.setup_metrics["perf/ref_precompute_s"] = time.perf_counter() - start
            if self.is_main:
                log.info(
                    "reference log-probs of %d pairs precomputed in %.1f s",
                    len(self.train_set),
                    self.setup_metrics["perf/ref_precompute_s"],
                )
        return policy

    def build_reference(self) -> ModelEngine:
        cfg = self.cfg

        def build():
            torch.manual_seed(cfg.seed)  # a tiny reference starts equal to the tiny policy
            return self.build_model(self.tokenizer, reference=True)

        # ref_offload keeps the frozen reference's ZeRO-3 shards in CPU memory between uses.
        ds = dataclasses.replace(
            cfg.deepspeed, offload_param=cfg.dpo.ref_offload or cfg.deepspeed.offload_param
        )
        return ModelEngine.frozen(build, ds, 2 * cfg.train.micro_batch_size, self.world)

    def reference_checksum(self) -> float:
        """CRC32 of the frozen reference's weights (of the policy's base when shared)."""
        if self.cfg.shared_reference:
            return self.reference.engine.state_checksum(base=True)
        return self.reference.state_checksum()

    def start_metrics(self):
        shared = {
            "resources/reference_shared_base": float(self.cfg.shared_reference),
            "resources/reference_model": float(self.reference is not None),
        }
        return {**super().start_metrics(), **self.setup_metrics, **shared, **self.data_metrics}

    def end_metrics(self):
        """The frozen reference's checksum at start and end (equal unless something wrote
        into it)."""
        if self.reference is None:
            return {}
        return {
            "ref/checksum_start": self.ref_checksum_start,
            "ref/checksum_end": self.reference_checksum(),
        }

    @property
    def layout(self):
        return PAIR_LAYOUTS[self.cfg.dpo.layout]

    def count_tokens(self, batch) -> int:
        return self.layout.num_tokens(batch)

    # ------------------------------------------------------------------ reference
    @torch.no_grad()
    def reference_logps(self, batch) -> torch.Tensor:
        """Per-row reference log-probs: precomputed ones when the batch carries them."""
        if "ref_rows" in batch:
            return batch["ref_rows"]
        if self.reference is None:
            return no_reference_rows(batch, self.cfg.dpo)
        return reference_rows(self.reference, batch, self.cfg.dpo)

    @torch.no_grad()
    def precompute_reference(self) -> torch.Tensor:
        """(N, 2) reference log-probs (chosen, rejected) of every training pair, in one pass:
        rank r scores every world-th pair of the length-sorted set (batches of
        ``train.eval_batch_size``), then the ranks sum their tables.  The set is padded to a
        multiple of the world size by repeating pairs, each scored twice and averaged."""
        n, world = len(self.train_set), self.world
        order = sorted(range(n), key=lambda i: B.example_length(self.train_set[i]))
        order += order[: (-n) % world]
        table, count = (
            torch.zeros(n, 2, dtype=torch.float64),
            torch.zeros(n, 1, dtype=torch.float64),
        )
        for indices in B.rank_micro_batches(
            order, self.rank, world, self.cfg.train.eval_batch_size, drop_last=False
        ):
            batch = self.collate([self.train_set[i] for i in indices])
            chosen, rejected = self.layout.split_rows(
                reference_rows(self.reference, batch, self.cfg.dpo)
            )
            table.index_add_(
                0, torch.tensor(indices), torch.stack([chosen, rejected], 1).double().cpu()
            )
            count.index_add_(
                0, torch.tensor(indices), torch.ones(len(indices), 1, dtype=torch.float64)
            )
        table = dist.all_reduce_sum_tensor(table) / dist.all_reduce_sum_tensor(count)
        return table.float()

    def next_micro_batches(self) -> Iterable[dict]:
        if self.ref_table is None:
            return super().next_micro_batches()
        return (
            self._with_reference(indices)
            for indices in self.sampler.micro_batches(self.step, self.rank)
        )

    def _with_reference(self, indices: List[int]) -> dict:
        batch = self.collate([self.train_set[i] for i in indices])
        rows = self.ref_table[torch.tensor(indices)].to(batch["input_ids"].device)
        batch["ref_rows"] = self.layout.rows(rows[:, 0], rows[:, 1])
        return batch

    # ------------------------------------------------------------------ losses
    def micro_batch_loss(self, batch):
        return dpo_batch_loss(self.engine, batch, self.reference_logps(batch), self.cfg.dpo)

    def eval_sums(self, batch):
        return dpo_eval_sums(self.engine, batch, self.reference_logps(batch), self.cfg.dpo)


def run(cfg: Config):
    """DPO as ``dpo.mode`` says -- the one switch (``rlhf-dist dpo-ray`` only sets it):
    this deepspeed-launcher trainer, or DPO on the Ray actor group (:mod:`.dpo_ray`)."""
    if cfg.dpo.mode == "ray":
        return dpo_ray.run(cfg)
    return DPOTrainer(cfg).fit()

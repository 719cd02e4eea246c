"""Reward model: Bradley-Terry on (chosen, rejected) pairs; score statistics saved for PPO."""

from __future__ import annotations

import math

import torch

from rlhf_dist.config import Config
from rlhf_dist.data import is_packed, preference_datasets
from rlhf_dist.engine import dist
from rlhf_dist.objectives import reward_objective
from rlhf_dist.trainers import batches as B
from rlhf_dist.trainers.base import LauncherTrainer


class RMTrainer(LauncherTrainer):
    job = "rm"

    def build_datasets(self, tokenizer):
        layout = "packed" if self.cfg.train.padding_free else "padded"
        return preference_datasets(self.cfg.data, tokenizer, layout)

    def build_model(self, tokenizer):
        from rlhf_dist.models import load_scalar_model

        return load_scalar_model(
            self.cfg.model, tokenizer, role="reward", field_prefix="model", train_head=True
        )

    def _forward_scores(self, batch) -> torch.Tensor:
        """Scores where a sequence classifier reads them (``algo.score_index``: the last
        non-pad token; 2B: chosen first), through the DeepSpeed engine's forward (ZeRO hooks);
        of padded rows or of one padding-free row."""
        from rlhf_dist.algo import score_index, sequence_end_index

        pad = self.engine.module.config.pad_token_id
        ids = batch["input_ids"]
        if is_packed(batch):
            values = self.engine(ids, None, batch["position_ids"])
            return values[0, sequence_end_index(batch["sequence_ids"], ids, pad)]
        values = self.engine(ids, batch["attention_mask"])
        return values.gather(-1, score_index(ids, batch["attention_mask"], pad)[:, None])[:, 0]

    def micro_batch_loss(self, batch):
        return reward_objective(self._forward_scores(batch), self.cfg.rm.margin)

    def eval_sums(self, batch):
        scores = self._forward_scores(batch)
        _, means = reward_objective(scores, self.cfg.rm.margin)
        n = float(scores.shape[0] // 2)
        return {**{k: v * n for k, v in means.items()}, "count": n}

    @torch.no_grad()
    def before_export(self):
        """Mean and std of the trained RM's scores on the training responses, for PPO's
        reward normalisation (``score(normalize=True)``)."""
        if not self.cfg.rm.save_score_stats:
            return None
        self.engine.eval()
        micro = B.eval_micro_batches(
            len(self.train_set), self.rank, self.world, self.cfg.train.eval_batch_size
        )
        total = {"n": 0.0, "sum": 0.0, "sq": 0.0}
        for batch in B.iterate(self.train_set, micro, self.collate):
            scores = self._forward_scores(batch).double()
            total["n"] += scores.numel()
            total["sum"] += float(scores.sum())
            total["sq"] += float((scores**2).sum())
        total = dist.all_reduce_sum(total)
        mean = total["sum"] / total["n"]
        std = math.sqrt(max(total["sq"] / total["n"] - mean**2, 1e-12))
        self.engine.module.set_score_stats(mean, std)
        return {"train/score_mean": mean, "train/score_std": std}


def run(cfg: Config):
    return RMTrainer(cfg).fit()

"""Reward model: Bradley-Terry on (chosen, rejected) pairs; score statistics saved for PPO."""
from __future__ import annotations

import math
from typing import Tuple

import torch

from rlhf_dist.algo import bradley_terry_loss, bradley_terry_metrics
from rlhf_dist.config import Config, DataConfig
from rlhf_dist.engine import dist
from rlhf_dist.trainers import batches as B
from rlhf_dist.trainers.base import LauncherTrainer


def split_pairs(values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Preference batches hold 2B rows: chosen first, rejected second."""
    half = values.shape[0] // 2
    return values[:half], values[half:]


def preference_datasets(data_cfg: DataConfig, tokenizer, layout: str = "padded"):
    """(train, eval or None, collator) of preference pairs — RM, DPO and DPO on Ray; the
    collator of ``layout`` (``rlhf_dist.trainers.pairs``; the RM scores padded rows)."""
    from rlhf_dist.data import build_preference_dataset
    from rlhf_dist.trainers.pairs import PAIR_LAYOUTS

    return (build_preference_dataset(data_cfg, tokenizer, split="train"),
            build_preference_dataset(data_cfg, tokenizer, split="eval"),
            PAIR_LAYOUTS[layout].collator(tokenizer.pad_token_id))


class RMTrainer(LauncherTrainer):
    job = "rm"

    def build_datasets(self, tokenizer):
        return preference_datasets(self.cfg.data, tokenizer)

    def build_model(self, tokenizer):
        from rlhf_dist.models import load_scalar_model

        return load_scalar_model(self.cfg.model, tokenizer, role="reward", field_prefix="model")

    def _forward_scores(self, batch) -> torch.Tensor:
        """Scores at the last real token, through the DeepSpeed engine's forward (ZeRO hooks)."""
        from rlhf_dist.algo import last_token_index

        values = self.engine(batch["input_ids"], batch["attention_mask"])
        return values.gather(-1, last_token_index(batch["attention_mask"])[:, None]).squeeze(-1)

    def micro_batch_loss(self, batch):
        chosen, rejected = split_pairs(self._forward_scores(batch))
        loss = bradley_terry_loss(chosen, rejected, margin=self.cfg.rm.margin)
        metrics = bradley_terry_metrics(chosen.detach(), rejected.detach())
        metrics["loss"] = float(loss.detach())
        return loss, metrics

    def eval_sums(self, batch):
        chosen, rejected = split_pairs(self._forward_scores(batch))
        n = float(chosen.shape[0])
        loss = bradley_terry_loss(chosen, rejected, margin=self.cfg.rm.margin)
        means = bradley_terry_metrics(chosen, rejected)
        return {"loss": float(loss) * n, **{k: v * n for k, v in means.items()}, "count": n}

    @torch.no_grad()
    def before_export(self):
        """Mean and std of the trained RM's scores on the training responses, for PPO's
        reward normalisation (``score(normalize=True)``)."""
        if not self.cfg.rm.save_score_stats:
            return None
        self.engine.eval()
        micro = B.eval_micro_batches(len(self.train_set), self.rank, self.world,
                                     self.cfg.train.eval_batch_size)
        total = {"n": 0.0, "sum": 0.0, "sq": 0.0}
        for batch in B.iterate(self.train_set, micro, self.collate):
            scores = self._forward_scores(batch).double()
            total["n"] += scores.numel()
            total["sum"] += float(scores.sum())
            total["sq"] += float((scores ** 2).sum())
        total = dist.all_reduce_sum(total)
        mean = total["sum"] / total["n"]
        std = math.sqrt(max(total["sq"] / total["n"] - mean ** 2, 1e-12))
        self.engine.module.set_score_stats(mean, std)
        return {"train/score_mean": mean, "train/score_std": std}


def run(cfg: Config):
    return RMTrainer(cfg).fit()

"""SFT: causal-LM cross-entropy on response tokens only (prompt labels are -100)."""

from __future__ import annotations

import math

from rlhf_dist.algo import sft_loss
from rlhf_dist.config import Config
from rlhf_dist.data import build_sft_dataset, lm_collator
from rlhf_dist.models import label_logits, load_causal_lm
from rlhf_dist.trainers.base import LauncherTrainer


class SFTTrainer(LauncherTrainer):
    job = "sft"

    def build_datasets(self, tokenizer):
        data = self.cfg.data
        train = build_sft_dataset(
            data, tokenizer, split="train", train_on_prompt=self.cfg.sft.train_on_prompt
        )
        evals = build_sft_dataset(
            data, tokenizer, split="eval", train_on_prompt=self.cfg.sft.train_on_prompt
        )
        return train, evals, lm_collator(tokenizer.pad_token_id, self.cfg.train.padding_free)

    def build_model(self, tokenizer):
        return load_causal_lm(self.cfg.model, tokenizer, field_prefix="model")

    def _loss(self, batch):
        """Only the positions that predict a label go through the LM head (not the prompt's
        or the padding's)."""
        logits, targets, _ = label_logits(
            self.engine,
            batch["input_ids"],
            batch.get("attention_mask"),
            batch.get("position_ids"),
            batch["labels"],
        )
        return sft_loss(logits, targets, shift=False)

    def micro_batch_loss(self, batch):
        loss = self._loss(batch)
        value = float(loss.detach())
        return loss, {"loss": value, "ppl": math.exp(min(value, 50.0))}

    def eval_sums(self, batch):
        tokens = float((batch["labels"][:, 1:] != -100).sum())  # the tokens sft_loss averages
        return {"loss": float(self._loss(batch)) * tokens, "count": tokens}

    def evaluate(self):
        metrics = super().evaluate()
        if metrics is not None:
            metrics["eval/ppl"] = math.exp(min(metrics["eval/loss"], 50.0))
        return metrics


def run(cfg: Config):
    return SFTTrainer(cfg).fit()

"""Causal-LM pretraining on plain texts (the toy task's corpus answers requests both ways, so
the base model complies with harmful requests as often as it refuses).  The SFT loop with
every token trained."""

from __future__ import annotations

from rlhf_dist.config import Config
from rlhf_dist.data import build_lm_dataset, lm_collator
from rlhf_dist.trainers.sft import SFTTrainer


class PretrainTrainer(SFTTrainer):
    job = "pretrain"

    def build_datasets(self, tokenizer):
        train = build_lm_dataset(self.cfg.data, tokenizer, split="train")
        evals = build_lm_dataset(self.cfg.data, tokenizer, split="eval")
        return train, evals, lm_collator(tokenizer.pad_token_id, self.cfg.train.padding_free)


def run(cfg: Config):
    return PretrainTrainer(cfg).fit()

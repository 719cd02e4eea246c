"""DPO against a frozen reference.  ``dpo_objective`` is the one DPO loss of the project:
the launcher trainer here and the Ray actor both call it on the same collated batches."""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import torch

from rlhf_dist.algo import dpo_loss, sequence_logps, sft_loss
from rlhf_dist.config import Config, DPOConfig
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.trainers.base import LauncherTrainer
from rlhf_dist.trainers.rm import preference_datasets, split_pairs


def sequence_logps_for(logits: torch.Tensor, labels: torch.Tensor, dpo: DPOConfig) -> torch.Tensor:
    """Per-sequence response log-probs ``(2B,)``; IPO uses the length-averaged form."""
    return sequence_logps(logits, labels, average=dpo.loss_type == "ipo")


def dpo_objective(logits: torch.Tensor, labels: torch.Tensor, ref_logps: torch.Tensor,
                  dpo: DPOConfig) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Loss of a preference batch of 2B rows (chosen first), given the reference's log-probs."""
    policy_chosen, policy_rejected = split_pairs(sequence_logps_for(logits, labels, dpo))
    ref_chosen, ref_rejected = split_pairs(ref_logps)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen, policy_rejected, ref_chosen, ref_rejected, dpo.beta,
        loss_type=dpo.loss_type, label_smoothing=dpo.label_smoothing)
    loss = losses.mean()
    metrics = {"dpo_loss": float(loss.detach()),
               "reward_accuracy": float((chosen_rewards > rejected_rewards).float().mean()),
               "reward_margin": float((chosen_rewards - rejected_rewards).mean()),
               "chosen_reward": float(chosen_rewards.mean()),
               "rejected_reward": float(rejected_rewards.mean()),
               "chosen_logp": float(policy_chosen.detach().mean())}
    if dpo.nll_coef > 0:
        half = logits.shape[0] // 2
        nll = sft_loss(logits[:half], labels[:half])
        loss = loss + dpo.nll_coef * nll
        metrics["nll"] = float(nll.detach())
    metrics["loss"] = float(loss.detach())
    return loss, metrics


class DPOTrainer(LauncherTrainer):
    job = "dpo"

    def build_datasets(self, tokenizer):
        return preference_datasets(self.cfg.data, tokenizer)

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

        def build_reference():
            torch.manual_seed(cfg.seed)  # a tiny reference starts equal to the tiny policy
            return self.build_model(self.tokenizer, reference=True)

        # ref_offload keeps the frozen reference's ZeRO-3 shards in CPU memory between uses.
        ds = dataclasses.replace(cfg.deepspeed, offload_param=cfg.dpo.ref_offload or
                                 cfg.deepspeed.offload_param)
        self.reference = ModelEngine.frozen(build_reference, ds, 2 * cfg.train.micro_batch_size,
                                            self.world)
        self.ref_checksum_start = self.reference.param_checksum()
        return policy

    def finish(self) -> None:
        """Log the frozen reference's checksum at start and end (equal unless something wrote
        into it), then the shared finish (eval, checkpoint, export)."""
        self.tracker.log({"ref/checksum_start": self.ref_checksum_start,
                          "ref/checksum_end": self.reference.param_checksum()}, self.step)
        super().finish()

    def _logits(self, engine: ModelEngine, batch) -> torch.Tensor:
        from rlhf_dist.models import causal_lm_logits

        return causal_lm_logits(engine, batch["input_ids"], batch["attention_mask"])

    @torch.no_grad()
    def reference_logps(self, batch) -> torch.Tensor:
        return sequence_logps_for(self._logits(self.reference, batch), batch["labels"],
                                  self.cfg.dpo)

    def micro_batch_loss(self, batch):
        ref_logps = self.reference_logps(batch)
        return dpo_objective(self._logits(self.engine, batch), batch["labels"], ref_logps,
                             self.cfg.dpo)

    def eval_sums(self, batch):
        _, metrics = dpo_objective(self._logits(self.engine, batch), batch["labels"],
                                   self.reference_logps(batch), self.cfg.dpo)
        n = float(batch["input_ids"].shape[0] // 2)
        return {**{k: v * n for k, v in metrics.items()}, "count": n}


def run(cfg: Config):
    return DPOTrainer(cfg).fit()

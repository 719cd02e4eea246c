"""The sections of the supervised and preference jobs: ``dpo.*``, ``sft.*``, ``rm.*``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rlhf_dist.algo.dpo import DPO_LOSSES
from rlhf_dist.algo.preference import REFERENCE_FREE_LOSSES, UNPAIRED_LOSSES
from rlhf_dist.config.checks import _choice, _positive, _require


@dataclass
class DPOConfig:
    """Direct preference optimisation against a frozen reference, or reference-free (SimPO,
    ORPO), or on unpaired thumbs-up / thumbs-down rows (KTO); docs/preference.md."""

    # DPO's beta: strength of the KL constraint to the reference (SimPO / ORPO: their beta,
    # e.g. 2.0 for SimPO, 0.1 for ORPO)
    beta: float = 0.1
    # sigmoid (DPO) | ipo | hinge, or without a reference model: simpo (Meng et al. 2024,
    # eq. 6, on mean per-token log-probs) | orpo (Hong et al. 2024, eq. 6-7, plus the chosen
    # answers' NLL), or on unpaired rows {prompt, completion, label}: kto (Ethayarajh et al.
    # 2024, eq. 8)
    loss_type: str = "sigmoid"
    simpo_gamma: float = 0.5  # simpo: the target reward margin gamma (eq. 6), >= 0
    # kto: lambda_D, the weight of a desirable row's loss (eq. 8), >= 0
    kto_desirable_weight: float = 1.0
    # kto: lambda_U, the weight of an undesirable row's loss (eq. 8), >= 0
    kto_undesirable_weight: float = 1.0
    # kto: null = lambda_D as given; r: lambda_D set from the training set's counts so that
    # lambda_D n_D / (lambda_U n_U) = r (eq. 9 recommends r in [1, 4/3]; the ratio is logged
    # as kto/weight_ratio and a warning names one outside that range)
    kto_balance: Optional[float] = None
    # sigmoid only: conservative DPO's assumed label noise, in [0, 0.5)
    label_smoothing: float = 0.0
    # weight of an NLL loss on the chosen responses added to the DPO loss (RPO)
    nll_coef: float = 0.0
    # (launcher) ZeRO-3: keep the frozen reference's shards in CPU memory between uses
    # (on Ray: resources.reference.offload_when_idle)
    ref_offload: bool = False
    # launcher (deepspeed launcher) | ray (actor and reference groups on Ray; what the
    # rlhf-dist dpo-ray command sets)
    mode: str = "launcher"
    # shared_prompt: one row prompt + chosen + rejected per pair (prompt computed once, 4D
    # mask: eager/sdpa attention); padded: 2B rows, chosen first (any attention); packed: the
    # 2B sequences in one row, no padding (train.padding_free); auto: packed with
    # train.padding_free, else shared_prompt unless a model uses flash_attention_2
    layout: str = "auto"
    # reference log-probs of the training pairs computed in one pass before training
    precompute_ref: bool = False

    def __post_init__(self):
        _positive("dpo.beta", self.beta)
        _choice(
            "dpo.loss_type",
            self.loss_type,
            sorted(DPO_LOSSES) + list(REFERENCE_FREE_LOSSES) + list(UNPAIRED_LOSSES),
        )
        _positive("dpo.simpo_gamma", self.simpo_gamma, allow_zero=True)
        self._check_kto()
        for key in ("precompute_ref", "ref_offload"):
            _require(
                self.needs_reference or not getattr(self, key),
                f"dpo.{key}",
                f"dpo.loss_type={self.loss_type} uses no reference model",
            )
        _require(
            0.0 <= self.label_smoothing < 0.5,
            "dpo.label_smoothing",
            f"must be in [0, 0.5), got {self.label_smoothing}",
        )
        _positive("dpo.nll_coef", self.nll_coef, allow_zero=True)
        _choice("dpo.mode", self.mode, ["launcher", "ray"])
        _choice("dpo.layout", self.layout, ["auto", "shared_prompt", "padded", "packed"])

    def _check_kto(self) -> None:
        _positive("dpo.kto_desirable_weight", self.kto_desirable_weight, allow_zero=True)
        _positive("dpo.kto_undesirable_weight", self.kto_undesirable_weight, allow_zero=True)
        _require(
            self.kto_balance is None or self.kto_balance > 0,
            "dpo.kto_balance",
            f"must be > 0 (or null), got {self.kto_balance}",
        )
        _require(
            self.kto_balance is None or self.kto_desirable_weight == 1.0,
            "dpo.kto_desirable_weight",
            "is set from the data by dpo.kto_balance: leave it at 1.0, or set dpo.kto_balance=null",
        )
        if not self.unpaired:
            return
        _require(
            not self.precompute_ref,
            "dpo.precompute_ref",
            f"dpo.loss_type="
            f"{self.loss_type} pairs each row with another row of its micro-batch (the "
            "KL estimate), so its reference log-probs are computed with the batch",
        )
        _require(
            self.nll_coef == 0,
            "dpo.nll_coef",
            f"is for pairs (the chosen answers' NLL); "
            f"dpo.loss_type={self.loss_type} has no chosen answers",
        )

    def check_batch(self, micro_batch_size: int, eval_batch_size: int) -> None:
        """KTO estimates KL from each micro-batch's mismatched pairs: a row needs another."""
        if not self.unpaired:
            return
        for key, size in (
            ("micro_batch_size", micro_batch_size),
            ("eval_batch_size", eval_batch_size),
        ):
            _require(
                size >= 2,
                f"train.{key}",
                f"is {size}; dpo.loss_type={self.loss_type} "
                "estimates KL from the mismatched pairs of a micro-batch (each row's "
                "prompt with another row's answer) and needs >= 2",
            )

    @property
    def needs_reference(self) -> bool:
        """Whether the loss compares with a frozen reference (not SimPO / ORPO)."""
        return self.loss_type not in REFERENCE_FREE_LOSSES

    @property
    def unpaired(self) -> bool:
        """Whether the loss reads unpaired rows {prompt, completion, label} (KTO)."""
        return self.loss_type in UNPAIRED_LOSSES


@dataclass
class SFTConfig:
    """Supervised fine-tuning: loss on response tokens unless ``train_on_prompt``."""

    # compute the loss on the prompt tokens too, not only the response
    train_on_prompt: bool = False


@dataclass
class RMConfig:
    """Reward model: Bradley-Terry with an optional fixed margin; score statistics saved."""

    margin: Optional[float] = None  # Bradley-Terry margin m: -log sigmoid(r_c - r_r - m); null = 0
    # save the trained RM's score mean and std (PPO's ppo.normalize_reward)
    save_score_stats: bool = True

"""Pure builder: our typed sections → a DeepSpeed config dict.  No deepspeed import here."""

from __future__ import annotations

import copy
from typing import Any, Dict

from rlhf_dist.config import DeepSpeedSection, TrainConfig


def _zero_section(ds: DeepSpeedSection) -> Dict[str, Any]:
    zero: Dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if ds.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    return zero


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    """Recursive dict merge; ``extra`` (the user's ``deepspeed.extra``) wins."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_ds_config(ds: DeepSpeedSection, train: TrainConfig, dp_size: int) -> Dict[str, Any]:
    """DeepSpeed config of a trained model over ``dp_size`` data-parallel ranks.

    Batch sizes satisfy DeepSpeed's identity ``train = micro × accumulation × ranks``
    (checked, with a message naming our fields, by ``TrainConfig.accumulation_steps``, which
    assigns nothing: ``train`` is left as given).
    """
    accum = train.accumulation_steps(dp_size)
    config = {
        "train_batch_size": train.train_batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": train.max_grad_norm,
        "zero_optimization": _zero_section(ds),
        "bf16": {"enabled": ds.bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return _merge(config, dict(ds.extra))


# Keys of deepspeed.extra that only mean something for a model with an optimiser: a frozen
# engine's config leaves them out (its batch sizes are ours, it has no optimiser to offload).
TRAINING_ONLY = (
    "optimizer",
    "scheduler",
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
)
TRAINING_ONLY_ZERO = ("offload_optimizer",)


def _frozen_extra(extra: Dict[str, Any]) -> Dict[str, Any]:
    """``deepspeed.extra`` without :data:`TRAINING_ONLY` (and ZeRO's optimizer offload)."""
    out = {key: value for key, value in extra.items() if key not in TRAINING_ONLY}
    if isinstance(out.get("zero_optimization"), dict):
        out["zero_optimization"] = {
            key: value
            for key, value in out["zero_optimization"].items()
            if key not in TRAINING_ONLY_ZERO
        }
    return out


def build_frozen_ds_config(
    ds: DeepSpeedSection, micro_batch_size: int, dp_size: int
) -> Dict[str, Any]:
    """Config of a frozen model (reference, reward): no optimizer; ZeRO-3 shards its weights,
    lower stages keep a full copy per rank (there is no optimizer state to partition).
    ``deepspeed.extra`` is merged last, less its training-only keys."""
    zero: Dict[str, Any] = {"stage": 3 if ds.zero_stage == 3 else 0}
    if ds.zero_stage == 3 and ds.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    config = {
        "train_batch_size": micro_batch_size * dp_size,
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": 1,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.bf16},
        "steps_per_print": 10**9,
    }
    return _merge(config, _frozen_extra(dict(ds.extra)))

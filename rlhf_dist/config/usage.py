"""Which keys each job reads, so a key it would silently ignore is named once (a warning, not
an error: one YAML may serve several jobs), and ``--help-config`` shows only what a job reads.

A job reads whole sections (:attr:`JobKeys.sections`), minus the keys in them it does not read
or overrides (:attr:`JobKeys.unread`, each with the reason).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omegaconf import OmegaConf

COMMON = ("output_dir", "seed", "model", "data", "train", "deepspeed", "logging", "checkpoint")
_RAY = ("resources",)
_PPO_TRAIN = (
    "the PPO learners take one constant-lr optimiser step per ppo.mini_batch_size "
    "rows (ppo.iterations, ppo.ppo_epochs)"
)
_LAUNCHER = {
    "deepspeed.role_zero_stage": "it sets Ray roles' stages; a launcher job has one model "
    "(deepspeed.zero_stage)",
}
_OWN_TOKENIZER = "every role reads the policy's token ids (model.tokenizer_path)"
_FROZEN_TOKENIZERS = {
    f"{role}.tokenizer_path": _OWN_TOKENIZER
    for role in ("ref_model", "reward_model", "critic_model")
}


def _columns(kind: str, *keys: str) -> Dict[str, str]:
    """The ``data.*_key`` columns a job's rows (``kind``) never look up."""
    return {f"data.{key}": f"{kind} rows do not have that column" for key in keys}


_PAIR_COLUMNS = ("response_key", "messages_key", "label_key", "extra_keys")
_PROMPT_ONLY = ("label_key", "extra_keys")
# KTO's unpaired rows (dpo.loss_type=kto): what no other job reads
_UNPAIRED = ("completion_key", "desirable_key")
_NOT_KTO = {"data.split_pairs": "only dpo.loss_type=kto reads it (unpaired rows)"}
DATA_UNREAD: Dict[str, Dict[str, str]] = {
    "pretrain": {
        **_columns(
            "pretrain (text)",
            "prompt_key",
            "response_key",
            "chosen_key",
            "rejected_key",
            "messages_key",
            "ranking_key",
            *_PROMPT_ONLY,
            *_UNPAIRED,
        ),
        "data.max_prompt_length": "pretrain rows have no prompt",
        **_NOT_KTO,
    },
    "sft": {
        **_columns("sft", "chosen_key", "rejected_key", "ranking_key", *_PROMPT_ONLY, *_UNPAIRED),
        **_NOT_KTO,
    },
    "rm": {**_columns("preference", *_PAIR_COLUMNS, *_UNPAIRED), **_NOT_KTO},
    "dpo": _columns("preference", *_PAIR_COLUMNS),
    "ppo": {
        **_columns(
            "prompt", "response_key", "chosen_key", "rejected_key", "ranking_key", *_UNPAIRED
        ),
        "data.max_length": "responses are cut at rollout.max_new_tokens",
        **_NOT_KTO,
    },
}


# online DPO reads ppo.iterations and the scorers' keys; not the PPO learners'
_ONLINE_PPO = "online DPO takes DPO steps (dpo.*), not PPO's"
_PPO_LEARNER_KEYS = (
    "ppo_epochs",
    "mini_batch_size",
    "clip_eps",
    "clip_eps_low",
    "clip_eps_high",
    "dual_clip",
    "ratio_level",
    "value_clip",
    "loss_agg",
    "critic_lr",
    "entropy_coef",
    "kl_coef",
    "kl_estimator",
    "kl_controller",
    "kl_target",
    "kl_horizon",
    "kl_in_loss",
    "target_kl",
    "gamma",
    "lam",
    "advantage_estimator",
    "whiten_advantages",
    "reward_clip",
    "mask_truncated",
    "dynamic_sampling",
    "dynamic_sampling_extra_rounds",
)
_DPO_OFFLINE_KEYS = (
    "mode",
    "precompute_ref",
    "ref_offload",
    "kto_desirable_weight",
    "kto_undesirable_weight",
    "kto_balance",
)


@dataclass(frozen=True)
class JobKeys:
    sections: Tuple[str, ...]  # top-level keys and sections the job reads
    unread: Dict[str, str] = field(default_factory=dict)  # key (or key prefix) -> why not


JOBS: Dict[str, JobKeys] = {
    "pretrain": JobKeys(COMMON, {**_LAUNCHER, **DATA_UNREAD["pretrain"]}),
    "sft": JobKeys(COMMON + ("sft",), {**_LAUNCHER, **DATA_UNREAD["sft"]}),
    "rm": JobKeys(COMMON + ("rm",), {**_LAUNCHER, **DATA_UNREAD["rm"]}),
    "dpo": JobKeys(
        COMMON + ("ref_model", "dpo"),
        {**_LAUNCHER, **DATA_UNREAD["dpo"], "ref_model.tokenizer_path": _OWN_TOKENIZER},
    ),
    "dpo-ray": JobKeys(
        COMMON + ("ref_model", "dpo") + _RAY,
        {**DATA_UNREAD["dpo"], "ref_model.tokenizer_path": _OWN_TOKENIZER},
    ),
    "ppo": JobKeys(
        COMMON + ("ref_model", "reward_model", "critic_model", "rollout", "ppo", "env") + _RAY,
        {
            **DATA_UNREAD["ppo"],
            **_FROZEN_TOKENIZERS,
            "train.epochs": "PPO runs ppo.iterations prompt batches",
            "train.max_steps": "PPO runs ppo.iterations prompt batches",
            "train.eval_every": "PPO has no eval pass (rlhf-dist eval afterwards)",
            "train.eval_batch_size": "PPO has no eval pass",
            "train.train_batch_size": _PPO_TRAIN,
            "train.gradient_accumulation_steps": _PPO_TRAIN,
            "train.lr_scheduler": _PPO_TRAIN,
            "train.warmup_ratio": _PPO_TRAIN,
            "train.min_lr_ratio": _PPO_TRAIN,
            "train.group_by_length": "PPO prompts are drawn in a seeded order",
            "train.padding_free": "rollout batches are left-padded prompts with their responses",
        },
    ),
    "online-dpo": JobKeys(
        COMMON + ("ref_model", "reward_model", "rollout", "ppo", "dpo", "env") + _RAY,
        {
            **DATA_UNREAD["ppo"],
            **_FROZEN_TOKENIZERS,
            **{f"ppo.{key}": _ONLINE_PPO for key in _PPO_LEARNER_KEYS},
            **{f"dpo.{key}": "online DPO forms pairs on Ray" for key in _DPO_OFFLINE_KEYS},
            "train.epochs": "online DPO runs ppo.iterations prompt batches",
            "train.max_steps": "online DPO runs ppo.iterations prompt batches",
            "train.eval_every": "online DPO has no eval pass (rlhf-dist eval afterwards)",
            "train.eval_batch_size": "online DPO has no eval pass",
            "train.group_by_length": "online DPO prompts are drawn in a seeded order",
        },
    ),
}


def job_of(command: str, cfg: Any) -> str:
    """The job a command runs (``dpo`` with ``dpo.mode=ray`` is ``dpo-ray``)."""
    return "dpo-ray" if command == "dpo" and cfg.dpo.mode == "ray" else command


def _leaves(node: Any, schema: Any, prefix: str = "") -> List[str]:
    """Dotted keys of the user's mapping ``node`` down to the schema's plain fields (a dict-
    or list-valued field such as ``deepspeed.extra`` is one key)."""
    if not isinstance(node, dict) or not dataclasses.is_dataclass(schema):
        return [prefix.rstrip(".")]
    hints = typing.get_type_hints(schema)
    out: List[str] = []
    for key, value in node.items():
        out += _leaves(value, hints.get(key), f"{prefix}{key}.")
    return out


def user_keys(path: Optional[str], overrides: Sequence[str]) -> List[str]:
    """The keys set by the YAML file at ``path`` and the ``key=value`` ``overrides``, in order,
    each once."""
    from rlhf_dist.config import Config

    layers = [OmegaConf.load(path)] if path is not None and Path(path).is_file() else []
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    keys: List[str] = []
    for layer in layers:
        keys += _leaves(OmegaConf.to_container(layer), Config)
    return list(dict.fromkeys(keys))


def layout_unread(cfg: Any) -> Dict[str, str]:
    """Keys a Ray job does not read because of how ``cfg`` lays it out: with no reference
    group (``Config.reference_group``) the ``resources.reference`` section."""
    if cfg is None or cfg.reference_group:
        return {}
    where = (
        "resources.reference_in_actor puts the reference in the actor's processes"
        if cfg.resources.reference_in_actor
        else "the reference is the LoRA policy's base, in the actor's processes"
    )
    return {"resources.reference": f"there is no reference group: {where}"}


def unread_keys(job: str, keys: Sequence[str], cfg: Any = None) -> List[Tuple[str, str]]:
    """``(key, why)`` for each of ``keys`` that ``job`` does not read (with ``cfg``, also
    those its layout leaves unread: :func:`layout_unread`)."""
    spec = JOBS[job]
    unread = {**spec.unread, **(layout_unread(cfg) if "resources" in spec.sections else {})}
    out = []
    for key in keys:
        top = key.split(".")[0]
        if top not in spec.sections:
            out.append((key, f"{job} does not read the {top} section"))
            continue
        why = next((w for k, w in unread.items() if key == k or key.startswith(k + ".")), None)
        if why is not None:
            out.append((key, f"{job} does not read it: {why}"))
    return out

"""Load a reward / critic model from config: ours, any ``*ForSequenceClassification``, an LM, or
tiny.

What a checkpoint holds decides how its head is read:

* ours (``config.rlhf_dist``), or a transformers sequence classifier with one label (the Hub,
  TRL's ``RewardTrainer``, OpenRLHF) → its trained ``score`` head, scored where transformers
  scores (:func:`rlhf_dist.algo.score_index`);
* our exports from before the head was named ``score`` → ``value_head.weight`` read as
  ``score.weight``; a non-zero ``value_head.bias`` (critics only: a Bradley-Terry loss never moves
  it) is dropped with a warning, and folded into a reward model's ``score_mean`` so its
  normalised scores are unchanged;
* a causal LM (e.g. the SFT model) → backbone loaded, head freshly initialised: only where the
  head is then trained (the critic, ``rlhf-dist rm``). A frozen reward model with a fresh head
  would score noise: that is an error naming the path.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Dict, Optional

from rlhf_dist.models._common import (
    ModelError,
    hf_load_kwargs,
    require_existing_path,
    require_model_dir,
    resolve_source,
)
from rlhf_dist.models.causal_lm import prepare_model, tiny_config_for
from rlhf_dist.models.scalar_head import (
    RECORD_KEY,
    check_role,
    head_init_std,
    is_scalar_head_config,
    is_sequence_classifier,
    new_head_record,
    scalar_head_class,
)

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from rlhf_dist.config import ModelConfig

logger = logging.getLogger(__name__)

_OLD_HEAD = {r"^value_head\.weight$": "score.weight"}  # exports before the head was `score`


def _tiny(
    model_cfg: "ModelConfig",
    tokenizer: "PreTrainedTokenizerBase",
    role: str,
    kwargs: Dict[str, Any],
    field_prefix: str,
) -> "PreTrainedModel":
    config = tiny_config_for(model_cfg, tokenizer, field_prefix)
    config.num_labels = 1
    setattr(config, RECORD_KEY, new_head_record(role))
    return scalar_head_class(config).from_config(config, **kwargs)


def _adopt_record(
    config: "PretrainedConfig", role: str, source: str, fresh_head_ok: bool, field: str
) -> bool:
    """Give ``config`` a head record for ``role``; True when the checkpoint already has a head."""
    if is_scalar_head_config(config):
        config.num_labels = 1  # our exports before the head was `score` did not say
        record = getattr(config, RECORD_KEY)
        if record["head"] != role:
            logger.info(
                "%s is a %s model; loading its head as the %s head", source, record["head"], role
            )
            record["head"] = role
        return True
    if is_sequence_classifier(config):
        if config.num_labels != 1:
            raise ModelError(
                f"{field}: {source!r} is a {config.architectures[0]} with "
                f"num_labels={config.num_labels}; a reward / critic model needs "
                "exactly one label"
            )
        setattr(config, RECORD_KEY, new_head_record(role))
        return True
    if not fresh_head_ok:
        found = ", ".join(getattr(config, "architectures", None) or ["no architectures"])
        raise ModelError(
            f"{field}: {source!r} has no reward head (found {found}): a frozen "
            "reward model with a freshly initialised head would score noise; give "
            "a reward model trained with `rlhf-dist rm` or a "
            "*ForSequenceClassification checkpoint with num_labels=1"
        )
    config.num_labels = 1
    setattr(config, RECORD_KEY, new_head_record(role, fresh_head=True))
    logger.info(
        "%s has no %s head: backbone loaded, score head initialised with std=%.4g",
        source,
        role,
        head_init_std(config.hidden_size),
    )
    return False


def _old_head_bias(source: str) -> Optional[float]:
    """``value_head.bias`` of one of our exports from before the head was ``score`` (or None)."""
    from safetensors import safe_open

    index = os.path.join(source, "model.safetensors.index.json")
    name = "model.safetensors"
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            name = json.load(f)["weight_map"].get("value_head.bias", name)
    path = os.path.join(source, name)
    if not os.path.exists(path):
        return None
    with safe_open(path, "pt") as weights:
        if "value_head.bias" not in weights.keys():
            return None
        return float(weights.get_tensor("value_head.bias").reshape(-1)[0])


def _drop_old_bias(model: "PreTrainedModel", source: str) -> None:
    bias = _old_head_bias(source) if os.path.isdir(source) else None
    if not bias:
        return
    mean, std = model.score_stats
    if model.role == "reward" and mean is not None:
        model.set_score_stats(mean - bias, std)
    logger.warning(
        "%s: value_head.bias = %.6g dropped (the score head has no bias): raw "
        "scores shift by %.6g%s",
        source,
        bias,
        -bias,
        "; score_mean shifted with them" if mean is not None else "",
    )


def _pretrained(
    model_cfg: "ModelConfig",
    role: str,
    kwargs: Dict[str, Any],
    field_prefix: str,
    fresh_head_ok: bool,
) -> "PreTrainedModel":
    from transformers import AutoConfig

    source = resolve_source(model_cfg.name_or_path)
    field = f"{field_prefix}.name_or_path"
    config = AutoConfig.from_pretrained(source, trust_remote_code=kwargs.pop("trust_remote_code"))
    has_head = _adopt_record(config, role, source, fresh_head_ok, field)
    try:
        cls = scalar_head_class(config)
    except ModelError as err:
        raise ModelError(f"{field}: {source!r}: {err}") from None
    model, info = cls.from_pretrained(
        source, config=config, output_loading_info=True, key_mapping=_OLD_HEAD, **kwargs
    )
    missing_head = sorted(k for k in info["missing_keys"] if k.startswith("score."))
    if has_head and missing_head:
        raise ModelError(
            f"{field}: {source!r} is marked as a reward / critic model but its "
            f"weights lack {missing_head}"
        )
    if any(name.endswith("ScalarHeadModel") for name in config.architectures or []):
        _drop_old_bias(model, source)  # an export from before the head was `score`
        if config.pad_token_id is not None and config.pad_token_id == config.eos_token_id:
            logger.warning(
                "%s: an export from before the score head; its pad token is its "
                "EOS, so it is now scored at the token before the final EOS (where "
                "transformers scores), not at the EOS it was trained on: train or "
                "export it again",
                source,
            )
    return model


def check_reward_source(model_cfg: "ModelConfig", field: str = "reward_model.name_or_path") -> None:
    """Before any model is loaded: the frozen reward model's path exists and its checkpoint has
    a reward head (ours or a one-label sequence classifier), read from its ``config.json``;
    errors name ``field``."""
    from transformers import AutoConfig

    require_model_dir(model_cfg.name_or_path, field)
    if model_cfg.name_or_path is None:
        return
    source = resolve_source(model_cfg.name_or_path)
    config = AutoConfig.from_pretrained(source, trust_remote_code=bool(model_cfg.trust_remote_code))
    _adopt_record(config, "reward", source, False, field)


def load_scalar_model(
    model_cfg: "ModelConfig",
    tokenizer: "PreTrainedTokenizerBase",
    role: str,
    field_prefix: str = "model",
    train_head: bool = False,
) -> "PreTrainedModel":
    """A scalar-head model (``role`` = ``"reward"`` or ``"critic"``) for one model section.

    * ``name_or_path`` null → a tiny model sized to ``tokenizer`` (seed torch first);
    * a saved reward / critic model or ``*ForSequenceClassification`` → backbone and head (and
      score stats) restored;
    * a plain causal LM / base checkpoint (e.g. the SFT model) → backbone weights loaded,
      ``lm_head`` ignored, ``score`` freshly initialised (see :func:`head_init_std`) — only for
      a critic or when ``train_head`` (the reward-model trainer); otherwise a
      :class:`ModelError`.

    Loading a reward model as ``role="critic"`` keeps its head (a common critic init) and
    records the new role.  Errors name ``{field_prefix}.<key>``.
    """
    check_role(role)
    require_existing_path(model_cfg.name_or_path, f"{field_prefix}.name_or_path")
    kwargs = hf_load_kwargs(model_cfg, field_prefix)
    if model_cfg.name_or_path is None:
        model = _tiny(model_cfg, tokenizer, role, kwargs, field_prefix)
    else:
        model = _pretrained(
            model_cfg, role, kwargs, field_prefix, fresh_head_ok=train_head or role == "critic"
        )
    return prepare_model(model, model_cfg, tokenizer, field_prefix)

"""Load a reward / critic model from config: a saved scalar-head model, a plain LM, or tiny."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict

from rlhf_dist.models._common import (ModelError, hf_load_kwargs, require_existing_path,
                                      resolve_source)
from rlhf_dist.models.causal_lm import prepare_model, tiny_config_for
from rlhf_dist.models.scalar_head import (RECORD_KEY, check_role, head_init_std,
                                          is_scalar_head_config, new_head_record,
                                          scalar_head_class)

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from rlhf_dist.config import ModelConfig

logger = logging.getLogger(__name__)


def _tiny(model_cfg: "ModelConfig", tokenizer: "PreTrainedTokenizerBase", role: str,
          kwargs: Dict[str, Any], field_prefix: str) -> "PreTrainedModel":
    config = tiny_config_for(model_cfg, tokenizer, field_prefix)
    setattr(config, RECORD_KEY, new_head_record(role))
    return scalar_head_class(config).from_config(config, **kwargs)


def _adopt_record(config: "PretrainedConfig", role: str, source: str) -> bool:
    """Give ``config`` a head record for ``role``; True when the checkpoint already has a head."""
    if not is_scalar_head_config(config):
        setattr(config, RECORD_KEY, new_head_record(role, fresh_head=True))
        logger.info("%s has no value head: backbone loaded, value_head initialised with "
                    "std=%.4g", source, head_init_std(config.hidden_size))
        return False
    record = getattr(config, RECORD_KEY)
    if record["head"] != role:
        logger.info("%s is a %s model; loading its head as the %s head", source,
                    record["head"], role)
        record["head"] = role
    return True


def _pretrained(model_cfg: "ModelConfig", role: str, kwargs: Dict[str, Any],
                field_prefix: str) -> "PreTrainedModel":
    from transformers import AutoConfig

    source = resolve_source(model_cfg.name_or_path)
    config = AutoConfig.from_pretrained(source, trust_remote_code=kwargs.pop("trust_remote_code"))
    has_head = _adopt_record(config, role, source)
    try:
        cls = scalar_head_class(config)
    except ModelError as err:
        raise ModelError(f"{field_prefix}.name_or_path: {source!r}: {err}") from None
    model, info = cls.from_pretrained(
        source, config=config, output_loading_info=True, **kwargs)
    missing_head = sorted(k for k in info["missing_keys"] if k.startswith("value_head."))
    if has_head and missing_head:
        raise ModelError(f"{field_prefix}.name_or_path: {source!r} is marked as a scalar-head "
                         f"model but its weights lack {missing_head}")
    return model


def load_scalar_model(model_cfg: "ModelConfig", tokenizer: "PreTrainedTokenizerBase",
                      role: str, field_prefix: str = "model") -> "PreTrainedModel":
    """A scalar-head model (``role`` = ``"reward"`` or ``"critic"``) for one model section.

    * ``name_or_path`` null → a tiny model sized to ``tokenizer`` (seed torch first);
    * a saved scalar-head model → backbone and head (and score stats) restored;
    * a plain causal LM / base checkpoint (e.g. the SFT model) → backbone weights loaded,
      ``lm_head`` ignored, ``value_head`` freshly initialised (see :func:`head_init_std`).

    Loading a reward model as ``role="critic"`` keeps its head (a common critic init) and
    records the new role.  Errors name ``{field_prefix}.<key>``.
    """
    check_role(role)
    require_existing_path(model_cfg.name_or_path, f"{field_prefix}.name_or_path")
    kwargs = hf_load_kwargs(model_cfg, field_prefix)
    if model_cfg.name_or_path is None:
        model = _tiny(model_cfg, tokenizer, role, kwargs, field_prefix)
    else:
        model = _pretrained(model_cfg, role, kwargs, field_prefix)
    return prepare_model(model, model_cfg, tokenizer, field_prefix)

"""Scalar-head models (critic, reward): an HF backbone + ``value_head = nn.Linear(hidden, 1)``.

:func:`scalar_head_class` builds, once per architecture, a real ``PreTrainedModel`` subclass of
that architecture's ``XPreTrainedModel`` with the backbone stored under the architecture's
``base_model_prefix`` — the same attribute its ``XForCausalLM`` uses.  Hence:

* a causal-LM checkpoint loads into the backbone unchanged (``lm_head.*`` is ignored) and the
  head is freshly initialised;
* ``save_pretrained`` writes backbone and ``value_head.weight`` / ``value_head.bias`` into the
  same safetensors file, and ``from_pretrained`` restores both in one call;
* ``from_pretrained`` / ``from_config`` run under DeepSpeed ZeRO-3's ``zero.Init`` for the head
  as well as the backbone.

``config.rlhf_dist`` records that a checkpoint is a scalar-head model:
``{"head": "reward" | "critic", "score_mean": float | None, "score_std": float | None}``.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import torch
from torch import nn

from rlhf_dist.algo.kl import last_token_index  # noqa: F401 (re-exported by models)
from rlhf_dist.models._common import ModelError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig, PreTrainedModel

logger = logging.getLogger(__name__)

RECORD_KEY = "rlhf_dist"
_FRESH_HEAD = "_fresh_head"  # transient marker in the record, consumed by __init__, never saved
_SUFFIX = "ScalarHeadModel"

# Role -> what its scalar means.  Both roles share one class; the role is recorded in the config.
ROLES: Dict[str, str] = {
    "reward": "sequence score, read at the last non-padding token (Bradley-Terry reward model)",
    "critic": "per-token value estimate V(s_t) for GAE",
}


def check_role(role: Any, field: str = "role") -> str:
    """``role`` if it is a known role, else :class:`ModelError` listing the choices."""
    if not isinstance(role, str) or role not in ROLES:
        raise ModelError(f"{field}: got {role!r}, expected one of {list(ROLES)}")
    return role


def head_init_std(hidden_size: int) -> float:
    """Std of a fresh ``value_head`` weight: ``1 / sqrt(hidden + 1)`` (bias starts at 0).

    With unit-scale final hidden states the initial scalar then has std ≈ 1, so the first
    Bradley-Terry / value losses are neither saturated nor vanishing.
    """
    return 1.0 / math.sqrt(hidden_size + 1)


def new_head_record(role: str, fresh_head: bool = False) -> Dict[str, Any]:
    """The ``config.rlhf_dist`` dict of a new scalar-head model of ``role`` (no score stats)."""
    record: Dict[str, Any] = {"head": check_role(role), "score_mean": None, "score_std": None}
    if fresh_head:
        record[_FRESH_HEAD] = True
    return record


def is_scalar_head_config(config: "PretrainedConfig") -> bool:
    """True when ``config`` was saved by a scalar-head model (it carries ``config.rlhf_dist``)."""
    record = getattr(config, RECORD_KEY, None)
    return isinstance(record, dict) and "head" in record


def _check_stat(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{name}: expected a finite number, got {value!r}") from None
    if not math.isfinite(number):
        raise ModelError(f"{name}: expected a finite number, got {value!r}")
    return number


class ScalarHeadMixin:
    """Methods of every scalar-head class; combined with ``XPreTrainedModel`` by the factory."""

    _backbone_class: type = nn.Module  # set per architecture by the factory

    def __init__(self, config: "PretrainedConfig"):
        super().__init__(config)
        record = getattr(config, RECORD_KEY, None)
        if not is_scalar_head_config(config):
            raise ModelError(f"config.{RECORD_KEY} is missing: build scalar-head models with "
                             "load_scalar_model(model_cfg, tokenizer, role) or give the config "
                             f"config.{RECORD_KEY} = new_head_record(role)")
        check_role(record["head"], f"config.{RECORD_KEY}.head")
        if record.pop(_FRESH_HEAD, False):
            # A plain LM checkpoint has no head: its absence is expected, not worth a warning.
            self._keys_to_ignore_on_load_missing = [r"^value_head\."]
        setattr(self, self.base_model_prefix, self._backbone_class(config))
        self.value_head = nn.Linear(config.hidden_size, 1)
        self.post_init()

    @classmethod
    def from_config(cls, config: "PretrainedConfig", **kwargs: Any) -> "PreTrainedModel":
        """Random init from ``config`` through transformers' ``_from_config`` (ZeRO-3 aware)."""
        kwargs.pop("trust_remote_code", None)
        return cls._from_config(config, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "value_head", None):
            from transformers import initialization as init  # respects already-loaded tensors

            init.normal_(module.weight, mean=0.0, std=head_init_std(self.config.hidden_size))
            init.zeros_(module.bias)
            return
        super()._init_weights(module)

    @property
    def role(self) -> str:
        return getattr(self.config, RECORD_KEY)["head"]

    @property
    def score_stats(self) -> Tuple[Optional[float], Optional[float]]:
        """``(mean, std)`` saved with the model, ``(None, None)`` until set."""
        record = getattr(self.config, RECORD_KEY)
        return record.get("score_mean"), record.get("score_std")

    def set_score_stats(self, mean: float, std: float) -> None:
        """Record score statistics in the config, so ``save_pretrained`` persists them."""
        mean = _check_stat("score_mean", mean)
        std = _check_stat("score_std", std)
        if std <= 0:
            raise ModelError(f"score_std: must be > 0, got {std!r}")
        record = getattr(self.config, RECORD_KEY)
        record["score_mean"], record["score_std"] = mean, std

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor],
                position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-token scalars ``(B, T)`` in float32 (values of padding positions are meaningless).

        Positions come from ``attention_mask`` so left padding does not shift them; a
        padding-free row passes no mask and its own ``position_ids``.
        """
        from rlhf_dist.models.causal_lm import forward_positions

        position_ids = forward_positions(attention_mask, position_ids)
        backbone = getattr(self, self.base_model_prefix)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, use_cache=False).last_hidden_state
        return self.value_head(hidden).squeeze(-1).float()

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              normalize: bool = False) -> torch.Tensor:
        """Sequence scores ``(B,)``: the scalar at the last non-padding token of each row.

        ``normalize=True`` returns ``(score - score_mean) / score_std`` from the saved stats.
        """
        values = self(input_ids, attention_mask)
        index = last_token_index(attention_mask).unsqueeze(-1)
        scores = values.gather(-1, index).squeeze(-1)
        if not normalize:
            return scores
        mean, std = self.score_stats
        if mean is None or std is None:
            raise ModelError("score(normalize=True): this model has no score statistics; "
                             "call set_score_stats(mean, std) first")
        return (scores - mean) / std


def _pretrained_parent(base_cls: type) -> type:
    """The architecture's ``XPreTrainedModel`` (the base class below ``PreTrainedModel``)."""
    from transformers import PreTrainedModel

    for klass in base_cls.__mro__[1:]:
        if issubclass(klass, PreTrainedModel) and klass is not PreTrainedModel:
            return klass
    return PreTrainedModel


def _class_name(base_cls: type) -> str:
    return base_cls.__name__.removesuffix("Model") + _SUFFIX


@functools.lru_cache(maxsize=None)
def _class_for(config_cls: type) -> type:
    from transformers import MODEL_MAPPING

    try:
        base_cls = MODEL_MAPPING[config_cls]
    except KeyError:
        raise ModelError(f"no transformers base model for {config_cls.__name__}; scalar heads "
                         "need an architecture built into transformers") from None
    parent = _pretrained_parent(base_cls)
    name = _class_name(base_cls)
    # An LM checkpoint's head is not ours to load: ignore it quietly.
    ignore = list(getattr(parent, "_keys_to_ignore_on_load_unexpected", None) or [])
    attrs = {"config_class": config_cls, "base_model_prefix": base_cls.base_model_prefix,
             "_backbone_class": base_cls, "_keys_to_ignore_on_load_unexpected":
             ignore + [r"(^|\.)lm_head\."], "__module__": __name__, "__qualname__": name,
             "__doc__": f"{base_cls.__name__} + scalar value_head (critic / reward model)."}
    cls = type(name, (ScalarHeadMixin, parent), attrs)
    globals()[name] = cls  # so pickle finds the class by name in this process …
    return cls


def scalar_head_class(base_config: "PretrainedConfig") -> type:
    """The scalar-head ``PreTrainedModel`` class for ``base_config``'s architecture (cached)."""
    return _class_for(type(base_config))


def __getattr__(name: str) -> type:
    """… and in a fresh process (e.g. a Ray worker), by rebuilding it from the class name."""
    if name.endswith(_SUFFIX):
        from transformers import CONFIG_MAPPING
        from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

        base_name = name.removesuffix(_SUFFIX) + "Model"
        for model_type, class_name in MODEL_MAPPING_NAMES.items():
            if class_name == base_name:
                return _class_for(CONFIG_MAPPING[model_type])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Scalar-head models (critic, reward): transformers' own ``XForSequenceClassification`` with one
label — an HF backbone + ``score = nn.Linear(hidden, 1, bias=False)`` — plus our methods.

:func:`scalar_head_class` builds, once per architecture, a subclass of that architecture's
``XForSequenceClassification`` (same class name, same module layout, same weight names).  Hence:

* a causal-LM checkpoint loads into the backbone unchanged (``lm_head.*`` is ignored) and the
  head is freshly initialised (allowed only where the head is trained: see the loader);
* a ``*ForSequenceClassification`` checkpoint with ``num_labels=1`` from the Hub, TRL's
  ``RewardTrainer`` or OpenRLHF loads with its trained ``score`` head;
* ``save_pretrained`` writes ``architectures: ["XForSequenceClassification"]``, ``num_labels: 1``
  and ``score.weight``, so ``AutoModelForSequenceClassification.from_pretrained`` (TRL, vLLM's
  classify runner) reads our export and gives our scores;
* ``from_pretrained`` / ``from_config`` run under DeepSpeed ZeRO-3's ``zero.Init``.

The one difference from the parent class: ``forward`` returns the per-token scalars ``(B, T)``
(a critic's values); :meth:`ScalarHeadMixin.sequence_scores` pools them where transformers does
(:func:`rlhf_dist.algo.score_index`).

``config.rlhf_dist`` records what the head is for:
``{"head": "reward" | "critic", "score_mean": float | None, "score_std": float | None}``.
Exports written before the head was named ``score`` (``value_head.weight`` and a ``bias``) still
load: see :mod:`rlhf_dist.models.scalar_loader`.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import torch
from torch import nn

from rlhf_dist.algo.kl import last_token_index, score_index  # noqa: F401 (re-exported)
from rlhf_dist.models._common import (
    RECORD_KEY,
    ModelError,  # noqa: F401 (re-exported)
    is_scalar_head_config,
    is_sequence_classifier,  # noqa: F401 (re-exported)
)
from rlhf_dist.models.causal_lm import forward_positions

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig, PreTrainedModel

logger = logging.getLogger(__name__)

_FRESH_HEAD = "_fresh_head"  # transient marker in the record, consumed by __init__, never saved
_SUFFIX = "ForSequenceClassification"

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
    """Std of a fresh ``score`` head weight: ``1 / sqrt(hidden + 1)``.

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


def _check_stat(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ModelError(f"{name}: expected a finite number, got {value!r}") from None
    if not math.isfinite(number):
        raise ModelError(f"{name}: expected a finite number, got {value!r}")
    return number


class ScalarHeadMixin:
    """Methods of every scalar-head class; combined with ``XForSequenceClassification`` by the
    factory."""

    def __init__(self, config: "PretrainedConfig"):
        record = getattr(config, RECORD_KEY, None)
        if not is_scalar_head_config(config):
            raise ModelError(
                f"config.{RECORD_KEY} is missing: build scalar-head models with "
                "load_scalar_model(model_cfg, tokenizer, role) or give the config "
                f"config.{RECORD_KEY} = new_head_record(role)"
            )
        check_role(record["head"], f"config.{RECORD_KEY}.head")
        if config.num_labels != 1:
            raise ModelError(
                f"config.num_labels: a reward / critic head has one output, got {config.num_labels}"
            )
        fresh_head = record.pop(_FRESH_HEAD, False)
        super().__init__(config)
        if fresh_head:
            # A plain LM checkpoint has no head: its absence is expected, not worth a warning.
            self._keys_to_ignore_on_load_missing = {r"^score\."}

    @classmethod
    def from_config(cls, config: "PretrainedConfig", **kwargs: Any) -> "PreTrainedModel":
        """Random init from ``config`` through transformers' ``_from_config`` (ZeRO-3 aware)."""
        kwargs.pop("trust_remote_code", None)
        return cls._from_config(config, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "score", None):
            from transformers import initialization as init  # respects already-loaded tensors

            init.normal_(module.weight, mean=0.0, std=head_init_std(self.config.hidden_size))
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

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        position_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Per-token scalars ``(B, T)`` in float32 (values of padding positions are meaningless).

        Positions come from ``attention_mask`` so left padding does not shift them; a
        padding-free row passes no mask and its own ``position_ids``.
        """
        position_ids = forward_positions(attention_mask, position_ids)
        backbone = getattr(self, self.base_model_prefix)
        hidden = backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
        return self.score(hidden).squeeze(-1).float()

    def sequence_scores(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, normalize: bool = False
    ) -> torch.Tensor:
        """Sequence scores ``(B,)``: the scalar where transformers' sequence classifier reads it
        (:func:`rlhf_dist.algo.score_index`: the last token that is not padding).

        ``normalize=True`` returns ``(score - score_mean) / score_std`` from the saved stats.
        """
        values = self(input_ids, attention_mask)
        index = score_index(input_ids, attention_mask, self.config.pad_token_id)
        scores = values.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        if not normalize:
            return scores
        mean, std = self.score_stats
        if mean is None or std is None:
            raise ModelError(
                "sequence_scores(normalize=True): this model has no score statistics; "
                "call set_score_stats(mean, std) first"
            )
        return (scores - mean) / std


@functools.lru_cache(maxsize=None)
def _class_for(config_cls: type) -> type:
    from transformers import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    try:
        parent = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[config_cls]
    except KeyError:
        raise ModelError(
            f"no transformers sequence-classification model for "
            f"{config_cls.__name__}; reward and critic models need an architecture "
            "with an XForSequenceClassification class"
        ) from None
    name = parent.__name__
    # An LM checkpoint's head is not ours to load, nor an old export's bias (the loader reads
    # it): ignore them quietly.
    ignore = list(getattr(parent, "_keys_to_ignore_on_load_unexpected", None) or [])
    attrs = {
        "_keys_to_ignore_on_load_unexpected": ignore + [r"(^|\.)lm_head\.", r"^value_head\.bias$"],
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"transformers' {name} (one label) with per-token scalars from forward "
        "(critic / reward model).",
    }
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
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        )

        for model_type, class_name in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.items():
            if class_name == name:
                return _class_for(CONFIG_MAPPING[model_type])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

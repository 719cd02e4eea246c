"""Loading the models an evaluation needs: a policy (causal LM) and a reward model, each with
its own tokenizer (from the model directory unless the section names ``tokenizer_path``).

A source is a local path / hub name (``str``), a :class:`~rlhf_dist.config.ModelConfig`
(``name_or_path: null`` builds a tiny random model, for tests), or an already loaded
:class:`Policy` / :class:`RewardModel` (used as is).  A missing local path raises
:class:`~rlhf_dist.models.ModelError` naming the field before anything is read.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

import torch

from rlhf_dist.config import ModelConfig


class Policy(NamedTuple):
    """A causal LM and its tokenizer."""

    model: Any
    tokenizer: Any


class RewardModel(NamedTuple):
    """A scalar-head reward model and its tokenizer."""

    model: Any
    tokenizer: Any


ModelSource = Union[str, ModelConfig, Policy]
RewardSource = Union[str, ModelConfig, RewardModel]


def resolve_device(device: Optional[str] = None) -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else CPU; otherwise ``torch.device(device)``."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _section(source: Union[str, ModelConfig]) -> ModelConfig:
    return ModelConfig(name_or_path=source) if isinstance(source, str) else source


def load_policy(
    source: Union[str, ModelConfig], device: Optional[str] = None, field_prefix: str = "model"
) -> Policy:
    """Load a causal LM and its tokenizer (from the model directory unless the section names
    ``tokenizer_path``), in eval mode on ``device``."""
    from rlhf_dist.models import load_causal_lm, load_tokenizer

    cfg = _section(source)
    tokenizer = load_tokenizer(cfg, field_prefix)
    model = load_causal_lm(cfg, tokenizer, field_prefix).to(resolve_device(device)).eval()
    return Policy(model, tokenizer)


def load_reward_model(
    source: Union[str, ModelConfig],
    device: Optional[str] = None,
    field_prefix: str = "reward_model",
) -> RewardModel:
    """Load a reward model (``load_scalar_model(role="reward")``) and its tokenizer."""
    from rlhf_dist.models import load_scalar_model, load_tokenizer

    cfg = _section(source)
    tokenizer = load_tokenizer(cfg, field_prefix)
    model = load_scalar_model(cfg, tokenizer, "reward", field_prefix)
    return RewardModel(model.to(resolve_device(device)).eval(), tokenizer)


def as_policy(source: ModelSource, device: Optional[str] = None) -> Policy:
    """``source`` itself when already a :class:`Policy`, else :func:`load_policy`."""
    return source if isinstance(source, Policy) else load_policy(source, device)


def as_reward_model(source: RewardSource, device: Optional[str] = None) -> RewardModel:
    """``source`` itself when already a :class:`RewardModel`, else :func:`load_reward_model`."""
    return source if isinstance(source, RewardModel) else load_reward_model(source, device)


__all__ = [
    "ModelSource",
    "Policy",
    "RewardModel",
    "RewardSource",
    "as_policy",
    "as_reward_model",
    "load_policy",
    "load_reward_model",
    "resolve_device",
]

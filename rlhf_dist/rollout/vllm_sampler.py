"""The ``vllm`` backend's in-process sampler (``rlhf-dist eval`` / ``label``): one
:class:`~rlhf_dist.rollout.vllm_engine.VLLMRolloutEngine` (engine core in this process) that
reads the model from its directory; every row of every batch has a seed of its own
(``VLLMRolloutEngine.generate``).  Needs no HF model in memory."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Tuple


def check_vllm_model(
    model_dir: Optional[str], max_model_len: int, field: str = "backend", model_field: str = "model"
) -> None:
    """What ``vllm`` needs, checked before any model is loaded: vLLM installed, a local model
    directory, an architecture / head size vLLM serves on this machine, and room for
    ``max_model_len`` (longest prompt + response) in the model's positions -- the checks of
    the PPO engines' :func:`~rlhf_dist.rollout.vllm_preflight.preflight`, on a directory."""
    from rlhf_dist.rollout.vllm_preflight import VLLMError, check_engine_model, require_vllm

    require_vllm(field)
    if model_dir is None or not os.path.isdir(os.path.expanduser(model_dir)):
        raise VLLMError(
            f"{model_field}: {field}=vllm reads the model from a local directory; got {model_dir!r}"
        )
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(os.path.expanduser(model_dir))
    check_engine_model(config, max_model_len, torch.cuda.is_available(), model_field)


def engine_settings(
    engines: Any, dtype: Optional[str], model: Any, max_model_len: int
) -> Tuple[Any, str]:
    """The engine section and dtype of an eval / label vLLM engine: ``engines``
    (``resources.rollout``; its defaults when None) with ``max_model_len`` filled in when
    unset, and ``dtype`` (``model.dtype``), else the loaded HF model's, else float32."""
    from rlhf_dist.config import RolloutResources

    engines = engines or RolloutResources()
    if engines.max_model_len is None:
        engines = dataclasses.replace(engines, max_model_len=max_model_len)
    if dtype is None:
        dtype = (
            "float32"
            if model is None
            else str(next(model.parameters()).dtype).replace("torch.", "")
        )
    return engines, dtype


def make_vllm_sampler(
    *,
    model_dir: Optional[str],
    model: Any,
    tokenizer: Any,
    rollout: Any,
    seed: int,
    max_model_len: int,
    engines: Any = None,
    dtype: Optional[str] = None,
) -> Any:
    from rlhf_dist.rollout.generate import stop_ids
    from rlhf_dist.rollout.vllm_engine import VLLMRolloutEngine

    engines, dtype = engine_settings(engines, dtype, model, max_model_len)
    check_vllm_model(model_dir, engines.max_model_len)
    stop = stop_ids(rollout, tokenizer)
    return VLLMRolloutEngine(
        os.path.expanduser(model_dir),
        rollout,
        engines,
        dtype,
        seed=seed,
        stop=stop,
        pad_token_id=tokenizer.pad_token_id,
    )


__all__ = ["check_vllm_model", "engine_settings", "make_vllm_sampler"]

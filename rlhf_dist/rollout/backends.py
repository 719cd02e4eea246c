"""Rollout backends for in-process sampling (``rlhf-dist eval``, ``rlhf-dist label``).

:data:`BACKENDS` maps a backend name (``--backend``) to a :class:`Backend`: the factory of its
sampler and the checks it needs before anything heavy is loaded.  :func:`make_sampler` builds
one sampler per model; every batch then goes through ``sampler.generate(ids, mask, seed)``
(left-padded ``(B, P)`` prompts → the rollout :class:`~rlhf_dist.protocol.Batch` of
:mod:`rlhf_dist.rollout.generate`, so decoding is shared):

* ``hf`` -- :class:`~rlhf_dist.rollout.RolloutEngine` on the loaded HF model; ``seed`` is the
  batch's generator seed.
* ``vllm`` -- one :class:`~rlhf_dist.rollout.vllm_engine.VLLMRolloutEngine` (engine core in
  this process) that reads the model from its directory; every row of every batch has a
  seed of its own (``VLLMRolloutEngine.generate``).  Needs no HF model in memory.

The two backends draw different random numbers: a seed reproduces a backend's own samples,
and greedy decoding gives the same tokens up to floating-point ties.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Dict, NamedTuple, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from rlhf_dist.protocol import Batch


class HFSampler:
    """HF ``generate`` through :class:`~rlhf_dist.rollout.RolloutEngine`."""

    def __init__(self, model: Any, tokenizer: Any, rollout: Any):
        from rlhf_dist.rollout.generate import RolloutEngine

        self.engine = RolloutEngine(model, tokenizer, rollout)
        self.pad_token_id = self.engine.pad_token_id

    def generate(self, prompt_input_ids: torch.Tensor, prompt_attention_mask: torch.Tensor,
                 seed: Optional[int]) -> Batch:
        """``(B, P)`` left-padded prompts → ``B · n`` rows; ``seed`` seeds the whole batch."""
        return self.engine.generate(prompt_input_ids, prompt_attention_mask,
                                    generator_seed=seed)

    def close(self) -> None:
        """Nothing to release: the HF model belongs to the caller."""


def _no_checks(model_dir: Optional[str], max_model_len: int, field: str,
               model_field: str) -> None:
    return None


def check_vllm_model(model_dir: Optional[str], max_model_len: int, field: str = "backend",
                     model_field: str = "model") -> None:
    """What ``vllm`` needs, checked before any model is loaded: vLLM installed, a local model
    directory, an architecture / head size vLLM serves on this machine, and room for
    ``max_model_len`` (longest prompt + response) in the model's positions."""
    from rlhf_dist.rollout.vllm_engine import VLLMError, check_engine_model, require_vllm

    require_vllm(field)
    if model_dir is None or not os.path.isdir(os.path.expanduser(model_dir)):
        raise VLLMError(f"{model_field}: {field}=vllm reads the model from a local directory; "
                        f"got {model_dir!r}")
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(os.path.expanduser(model_dir))
    check_engine_model(config, max_model_len, torch.cuda.is_available(), model_field)


def _hf_sampler(*, model: Any, tokenizer: Any, rollout: Any, **_: Any) -> HFSampler:
    if model is None:
        raise ValueError("backend hf samples from a loaded HF model; got none")
    return HFSampler(model, tokenizer, rollout)


def engine_settings(engines: Any, dtype: Optional[str], model: Any,
                    max_model_len: int) -> Tuple[Any, str]:
    """The engine section and dtype of an eval / label vLLM engine: ``engines``
    (``resources.rollout``; its defaults when None) with ``max_model_len`` filled in when
    unset, and ``dtype`` (``model.dtype``), else the loaded HF model's, else float32."""
    import dataclasses

    from rlhf_dist.config import RolloutResources

    engines = engines or RolloutResources()
    if engines.max_model_len is None:
        engines = dataclasses.replace(engines, max_model_len=max_model_len)
    if dtype is None:
        dtype = ("float32" if model is None
                 else str(next(model.parameters()).dtype).replace("torch.", ""))
    return engines, dtype


def _vllm_sampler(*, model_dir: Optional[str], model: Any, tokenizer: Any, rollout: Any,
                  seed: int, max_model_len: int, engines: Any = None,
                  dtype: Optional[str] = None) -> Any:
    from rlhf_dist.rollout.generate import stop_ids
    from rlhf_dist.rollout.vllm_engine import VLLMRolloutEngine

    engines, dtype = engine_settings(engines, dtype, model, max_model_len)
    check_vllm_model(model_dir, engines.max_model_len)
    stop = stop_ids(rollout, tokenizer)
    return VLLMRolloutEngine(os.path.expanduser(model_dir), rollout, engines, dtype,
                             seed=seed, stop=stop, pad_token_id=tokenizer.pad_token_id)


class Backend(NamedTuple):
    """A rollout backend: ``make`` builds its sampler (keyword arguments of
    :func:`make_sampler`), ``check`` raises a :class:`ConfigError` for what it cannot serve
    (``(model_dir, max_model_len, field, model_field)``), ``needs_model``: whether the sampler
    uses the loaded HF model (else only its directory and tokenizer)."""

    make: Callable[..., Any]
    check: Callable[[Optional[str], int, str, str], None]
    needs_model: bool


BACKENDS: Dict[str, Backend] = {
    "hf": Backend(_hf_sampler, _no_checks, needs_model=True),
    "vllm": Backend(_vllm_sampler, check_vllm_model, needs_model=False),
}


def backend(name: str, field: str = "backend") -> Backend:
    """The :class:`Backend` called ``name``; a :class:`ConfigError` naming ``field`` and the
    valid names otherwise."""
    from rlhf_dist.config import ConfigError

    if name not in BACKENDS:
        raise ConfigError(f"{field}: unknown rollout backend {name!r}; choose one of "
                          f"{sorted(BACKENDS)}")
    return BACKENDS[name]


def check_backend(name: str, model_dir: Optional[str], max_model_len: int,
                  field: str = "backend", model_field: str = "model") -> None:
    """Every check of backend ``name`` for the model at ``model_dir`` that can fail before a
    model is loaded (``field`` / ``model_field``: the flags named in the errors)."""
    backend(name, field).check(model_dir, max_model_len, field, model_field)


def make_sampler(name: str, *, model_dir: Optional[str], model: Any, tokenizer: Any,
                 rollout: Any, seed: int, max_model_len: int, engines: Any = None,
                 dtype: Optional[str] = None) -> Any:
    """A sampler of backend ``name`` with ``generate(ids, mask, seed) -> Batch``, the
    ``pad_token_id`` its prompts are padded with, and ``close()`` (releases an engine the
    sampler started; call it when done).

    ``model_dir``: the model's directory (``vllm`` loads it; may be None for ``hf``);
    ``model``: the loaded HF model (``hf``); ``seed``: the engine's seed; ``max_model_len``:
    longest prompt + response; ``engines`` (``resources.rollout``) and ``dtype``
    (``model.dtype``): the ``vllm`` engine's settings (:func:`engine_settings`).
    Build it once per model and reuse it for every batch.
    """
    return backend(name).make(model_dir=model_dir, model=model, tokenizer=tokenizer,
                              rollout=rollout, seed=seed, max_model_len=max_model_len,
                              engines=engines, dtype=dtype)


__all__ = ["BACKENDS", "Backend", "HFSampler", "backend", "check_backend",
           "check_vllm_model", "make_sampler"]

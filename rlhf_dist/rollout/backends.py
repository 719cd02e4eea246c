"""In-process sampling by a rollout backend (``rlhf-dist eval``, ``rlhf-dist label``).

The backends are the classes of :data:`rlhf_dist.config.registries.ROLLOUT_BACKENDS` (the
PPO driver's :mod:`rlhf_dist.rollout.interface`); each also says how it samples in one
process: ``sampler_needs_model`` (whether it samples from the loaded HF model, else from the
model's directory), ``check_sampler(model_dir, max_model_len, field, model_field)`` (what can
fail before a model is loaded) and ``make_sampler(**kwargs)``.  :func:`make_sampler` builds
one sampler per model; every batch then goes through ``sampler.generate(ids, mask, seed)``
(left-padded ``(B, P)`` prompts → the rollout :class:`~rlhf_dist.protocol.Batch` of
:mod:`rlhf_dist.rollout.generate`, so decoding is shared):

* ``hf`` -- :class:`~rlhf_dist.rollout.hf.HFSampler` on the loaded HF model; ``seed`` is
  the batch's generator seed.
* ``vllm`` -- :mod:`rlhf_dist.rollout.vllm_sampler`: one vLLM engine in this process; every
  row of every batch has a seed of its own.

The two backends draw different random numbers: a seed reproduces a backend's own samples,
and greedy decoding gives the same tokens up to floating-point ties.
"""

from __future__ import annotations

from typing import Any, Optional

from rlhf_dist.config import ConfigError
from rlhf_dist.config.registries import ROLLOUT_BACKENDS


def backend(name: str, field: str = "backend") -> Any:
    """The backend class called ``name``; a :class:`ConfigError` naming ``field`` and the
    valid names otherwise."""
    from rlhf_dist.rollout.interface import rollout_backend

    if ":" not in name and name not in ROLLOUT_BACKENDS.names():
        raise ConfigError(
            f"{field}: unknown rollout backend {name!r}; choose one of {ROLLOUT_BACKENDS.names()}"
        )
    return rollout_backend(name)


def check_backend(
    name: str,
    model_dir: Optional[str],
    max_model_len: int,
    field: str = "backend",
    model_field: str = "model",
) -> None:
    """Every check of backend ``name`` for the model at ``model_dir`` that can fail before a
    model is loaded (``field`` / ``model_field``: the flags named in the errors)."""
    backend(name, field).check_sampler(model_dir, max_model_len, field, model_field)


def make_sampler(
    name: str,
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
    """A sampler of backend ``name`` with ``generate(ids, mask, seed) -> Batch``, the
    ``pad_token_id`` its prompts are padded with, and ``close()`` (releases an engine the
    sampler started; call it when done).

    ``model_dir``: the model's directory (``vllm`` loads it; may be None for ``hf``);
    ``model``: the loaded HF model (``hf``); ``seed``: the engine's seed; ``max_model_len``:
    longest prompt + response; ``engines`` (``resources.rollout``) and ``dtype``
    (``model.dtype``): the ``vllm`` engine's settings
    (:func:`~rlhf_dist.rollout.vllm_sampler.engine_settings`).
    Build it once per model and reuse it for every batch.
    """
    return backend(name).make_sampler(
        model_dir=model_dir,
        model=model,
        tokenizer=tokenizer,
        rollout=rollout,
        seed=seed,
        max_model_len=max_model_len,
        engines=engines,
        dtype=dtype,
    )


__all__ = ["backend", "check_backend", "make_sampler"]

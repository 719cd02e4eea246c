"""Shared pieces of the model loaders: the error type, local-path checks, HF keyword arguments,
what kind of checkpoint a config describes (scalar head, sequence classifier).

Nothing here imports torch or transformers at module level, so a bad path is reported before
any heavy import or file read happens.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Optional

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

    from rlhf_dist.config import ModelConfig

# a scalar-head model's config attribute recording its head (see models/scalar_head.py)
RECORD_KEY = "rlhf_dist"


class ModelError(ValueError):
    """A model / tokenizer that cannot be built; the message names the config field."""


def looks_like_local_path(value: str) -> bool:
    """True when ``value`` is meant as a filesystem path rather than a hub id.

    Paths start with ``/``, ``.`` or ``~``, contain a platform separator other than ``/``, or
    contain more than one ``/``.  A hub id (``org/name``) has at most one ``/``, so a single ``/``
    alone does not make a path (on POSIX ``os.sep`` is ``/`` and would otherwise match every hub
    id).  Anything that exists on disk is a local path too.
    """
    if value.startswith(("/", ".", "~")) or value.count("/") > 1:
        return True
    if os.sep != "/" and os.sep in value:
        return True
    return os.path.exists(value)


def require_existing_path(value: Optional[str], field: str) -> None:
    """Raise :class:`ModelError` naming ``field`` when ``value`` is a local path that is missing."""
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ModelError(f"{field}: expected a local path or hub name, got {value!r}")
    if looks_like_local_path(value) and not os.path.exists(os.path.expanduser(value)):
        raise ModelError(f"{field}: {value!r} does not exist")


def require_model_dir(value: Optional[str], field: str) -> None:
    """:func:`require_existing_path`, and a local directory must hold a model (its
    ``config.json``): a :class:`ModelError` naming ``field`` before anything is loaded."""
    require_existing_path(value, field)
    if value is None or not looks_like_local_path(value):
        return
    path = os.path.expanduser(value)
    if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelError(f"{field}: {value!r} is not a model directory (no config.json)")


def resolve_source(value: str) -> str:
    """``~`` expanded for local paths; hub ids unchanged."""
    return os.path.expanduser(value) if value.startswith("~") else value


def is_scalar_head_config(config: "PretrainedConfig") -> bool:
    """True when ``config`` was saved by a scalar-head model (it carries ``config.rlhf_dist``)."""
    record = getattr(config, RECORD_KEY, None)
    return isinstance(record, dict) and "head" in record


def is_sequence_classifier(config: "PretrainedConfig") -> bool:
    """True for a transformers ``*ForSequenceClassification`` checkpoint's config (ours, the
    Hub's, TRL's, OpenRLHF's): a model with a score head and no LM head."""
    return any(
        name.endswith("ForSequenceClassification")
        for name in getattr(config, "architectures", None) or []
    )


# Config spelling -> torch dtype attribute name.  A registry, so adding "float8_…" is one line.
DTYPES: Dict[str, str] = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def torch_dtype(name: str, field: str) -> Any:
    """The ``torch.dtype`` of a config spelling; :class:`ModelError` naming ``field`` if unknown."""
    if name not in DTYPES:
        raise ModelError(f"{field}: got {name!r}, expected one of {list(DTYPES)}")
    import torch

    return getattr(torch, DTYPES[name])


def hf_load_kwargs(model_cfg: "ModelConfig", field_prefix: str = "model") -> Dict[str, Any]:
    """Keyword arguments for ``from_pretrained`` / ``from_config`` taken from ``model_cfg``.

    ``trust_remote_code`` is passed through as a strict bool (the config default is False), so
    remote code never runs unless the user set it.
    """
    kwargs = {
        "dtype": torch_dtype(model_cfg.dtype, f"{field_prefix}.dtype"),
        "attn_implementation": model_cfg.attn_implementation,
        "trust_remote_code": bool(model_cfg.trust_remote_code),
    }
    if model_cfg.quantized:
        kwargs["quantization_config"] = quantization_config(model_cfg, field_prefix)
    return kwargs


def quantization_config(model_cfg: "ModelConfig", field_prefix: str):
    """bitsandbytes' config of a QLoRA base (:func:`bnb_config`); CUDA only."""
    import torch

    bits = "load_in_4bit" if model_cfg.load_in_4bit else "load_in_8bit"
    if not torch.cuda.is_available():
        raise ModelError(
            f"{field_prefix}.{bits}: quantised weights (bitsandbytes) need a CUDA "
            "device and this process has none; train the LoRA adapter on "
            "unquantised weights here"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError(
            f"{field_prefix}.{bits}: needs the bitsandbytes package (pip install bitsandbytes)"
        ) from None
    return bnb_config(model_cfg, field_prefix)


def bnb_config(model_cfg: "ModelConfig", field_prefix: str):
    """bitsandbytes' 4-bit (NF4, double quantisation, compute in the model dtype) or 8-bit
    config.  No skip list of our own: transformers then keeps each architecture's output head
    (``lm_head``, ``embed_out``…, a sequence classifier's ``score``: the last module) in full
    precision, which a trained-in-full critic head needs (tests/engine/test_engine_qlora.py)."""
    from transformers import BitsAndBytesConfig

    if model_cfg.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch_dtype(model_cfg.dtype, f"{field_prefix}.dtype"),
    )

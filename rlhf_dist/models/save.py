"""Save a model and its tokenizer in HF format (safetensors), loadable by ``from_pretrained``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def save_model(
    model: "PreTrainedModel",
    tokenizer: Optional["PreTrainedTokenizerBase"],
    out_dir: Union[str, Path],
    state_dict: Optional[Dict[str, Any]] = None,
    is_main_process: bool = True,
) -> Path:
    """``save_pretrained`` of ``model`` and ``tokenizer`` into ``out_dir`` (safetensors).

    transformers 5 always writes safetensors (``model.safetensors``).  A scalar-head model's
    ``score.weight`` lands in the same file as the backbone (the ``*ForSequenceClassification``
    layout transformers reads), and its
    role and score statistics in ``config.json`` under ``rlhf_dist``.  Under ZeRO-3 pass the
    consolidated ``state_dict`` (gathered by the engine) and ``is_main_process`` = rank 0; other
    ranks write nothing.
    """
    out = Path(out_dir)
    if not is_main_process:
        return out
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def save_tensors(
    model: "PreTrainedModel",
    tokenizer: Optional["PreTrainedTokenizerBase"],
    out_dir: Union[str, Path],
    tensors: Dict[str, Any],
) -> Path:
    """``tensors`` as a full-precision HF model of ``model``'s architecture in ``out_dir``:
    its config without the ``quantization_config``, one safetensors file, the tokenizer.

    For a LoRA merge on a quantised (QLoRA) base, whose ``save_pretrained`` would write the
    quantised weights instead of the ones given."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.config)
    config.__dict__.pop("quantization_config", None)
    config.architectures = [type(model).__name__]
    config.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None and model.can_generate():
        model.generation_config.save_pretrained(out)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out

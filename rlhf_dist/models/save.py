"""Save a model and its tokenizer in HF format (safetensors), loadable by ``from_pretrained``."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def save_model(model: "PreTrainedModel", tokenizer: Optional["PreTrainedTokenizerBase"],
               out_dir: Union[str, Path], state_dict: Optional[Dict[str, Any]] = None,
               is_main_process: bool = True) -> Path:
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

"""Models: tokenizers, causal LMs, scalar-head (reward / critic) models, HF-format saving, and
the learners' forward (``action_logprobs``: log-probs of a rollout's action tokens).

Exports resolve lazily (PEP 562): ``import rlhf_dist.models`` imports neither torch nor
transformers; the first use of a name imports its submodule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List

from rlhf_dist._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs: the names of _EXPORTS
    from rlhf_dist.models._common import (
        ModelError,
        hf_load_kwargs,
        is_scalar_head_config,
        looks_like_local_path,
    )
    from rlhf_dist.models.causal_lm import (
        causal_lm_logits,
        enable_gradient_checkpointing,
        label_logits,
        load_causal_lm,
        model_dtype,
        own_aligned_memory,
        position_ids_from_mask,
    )
    from rlhf_dist.models.learner_forward import action_logprobs, first_action_column
    from rlhf_dist.models.save import save_model
    from rlhf_dist.models.scalar_head import (
        ROLES,
        head_init_std,
        last_token_index,
        new_head_record,
        scalar_head_class,
    )
    from rlhf_dist.models.scalar_loader import load_scalar_model
    from rlhf_dist.models.tiny import TINY_ARCHS, build_tiny_config
    from rlhf_dist.models.tokenizer import ensure_pad_token, load_tokenizer

# public name -> submodule that defines it
_EXPORTS: Dict[str, str] = {
    "ModelError": "_common",
    "hf_load_kwargs": "_common",
    "looks_like_local_path": "_common",
    "is_scalar_head_config": "_common",
    "load_tokenizer": "tokenizer",
    "ensure_pad_token": "tokenizer",
    "TINY_ARCHS": "tiny",
    "build_tiny_config": "tiny",
    "load_causal_lm": "causal_lm",
    "causal_lm_logits": "causal_lm",
    "action_logprobs": "learner_forward",
    "first_action_column": "learner_forward",
    "label_logits": "causal_lm",
    "model_dtype": "causal_lm",
    "position_ids_from_mask": "causal_lm",
    "enable_gradient_checkpointing": "causal_lm",
    "own_aligned_memory": "causal_lm",
    "ROLES": "scalar_head",
    "head_init_std": "scalar_head",
    "last_token_index": "scalar_head",
    "new_head_record": "scalar_head",
    "scalar_head_class": "scalar_head",
    "load_scalar_model": "scalar_loader",
    "save_model": "save",
}

__all__: List[str] = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

"""Causal LMs: load from a path / hub name or build a tiny one; forwards with correct positions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple, Union

from rlhf_dist.models._common import (
    ModelError,
    hf_load_kwargs,
    is_scalar_head_config,
    is_sequence_classifier,
    require_existing_path,
    resolve_source,
)
from rlhf_dist.models.tiny import build_tiny_config

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from rlhf_dist.config import ModelConfig


def position_ids_from_mask(attention_mask: "torch.Tensor") -> "torch.Tensor":
    """Position ids ``(B, T)`` counted over real tokens only: 0, 1, 2, … from the first 1.

    With left padding the first real token gets position 0, as it would unpadded; padding
    positions get 0 (they are masked out of attention anyway).
    """
    mask = attention_mask.long()
    return ((mask.cumsum(-1) - 1) * mask).clamp(min=0)


def model_dtype(model) -> "torch.dtype":
    """Parameter dtype of an HF model, or of the one a DeepSpeed / model engine wraps."""
    return getattr(model, "module", model).dtype


def forward_positions(
    attention_mask: Optional["torch.Tensor"], position_ids: Optional["torch.Tensor"]
) -> "torch.Tensor":
    """The position ids a forward takes: given ones, else derived from ``attention_mask``.
    A padding-free batch (``data.packing``) has no mask, only its restarting positions."""
    if position_ids is not None:
        return position_ids
    if attention_mask is None:
        raise ValueError(
            "a forward needs an attention_mask or, for a padding-free batch, position_ids"
        )
    return position_ids_from_mask(attention_mask)


def causal_lm_logits(
    model: "PreTrainedModel",
    input_ids: "torch.Tensor",
    attention_mask: Optional["torch.Tensor"],
    position_ids: Optional["torch.Tensor"] = None,
    logits_to_keep: Union[int, "torch.Tensor"] = 0,
) -> "torch.Tensor":
    """Logits ``(B, T, V)`` of a causal LM, positions derived from ``attention_mask``.

    Works for right and left padding alike, and for a padding-free row (no mask, positions
    restarting at each sequence); no KV cache is built.  ``logits_to_keep`` (transformers'
    own argument) sends fewer positions through the LM head: an int > 0 the last that many,
    a 1D tensor those positions (:func:`~rlhf_dist.algo.scored_columns`); the result is
    ``(B, kept, V)``.
    """
    position_ids = forward_positions(attention_mask, position_ids)
    whole = isinstance(logits_to_keep, int) and logits_to_keep == 0
    keep = {} if whole else {"logits_to_keep": logits_to_keep}
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        **keep,
    )
    return out.logits


def label_logits(
    model: "PreTrainedModel",
    input_ids: "torch.Tensor",
    attention_mask: Optional["torch.Tensor"],
    position_ids: Optional["torch.Tensor"],
    labels: "torch.Tensor",
) -> Tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """``(logits, targets, kept)`` for ``labels`` (B, T; -100 where nothing is scored) in the
    causal-LM shift, position t predicting token t + 1: only the K positions that predict a
    label in some row (``kept``, :func:`~rlhf_dist.algo.scored_columns`) go through the LM
    head -- not the prompt's, not the padding's.  ``logits`` (B, K, V) score the aligned
    ``targets`` (B, K) with no further shift."""
    from rlhf_dist.algo import scored_columns

    targets = labels[:, 1:]
    kept = scored_columns(targets)
    logits = causal_lm_logits(model, input_ids, attention_mask, position_ids, logits_to_keep=kept)
    return logits, targets[:, kept], kept


def tiny_config_for(
    model_cfg: "ModelConfig", tokenizer: "PreTrainedTokenizerBase", field_prefix: str = "model"
) -> "PretrainedConfig":
    """The tiny config of a section whose ``name_or_path`` is null, sized to ``tokenizer``."""
    return build_tiny_config(
        model_cfg.tiny,
        len(tokenizer),
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        field_prefix,
    )


def prepare_model(
    model: "PreTrainedModel",
    model_cfg: "ModelConfig",
    tokenizer: "PreTrainedTokenizerBase",
    field_prefix: str = "model",
) -> "PreTrainedModel":
    """Checks and settings shared by every loader: vocabulary fits, pad id, checkpointing.

    The vocabulary is read from the config, not the embedding, because under ZeRO-3 the
    embedding parameter is a partitioned (empty) tensor.
    """
    vocab = model.config.get_text_config().vocab_size
    if len(tokenizer) > vocab:
        raise ModelError(
            f"{field_prefix}: the tokenizer ({field_prefix}.tokenizer_path="
            f"{model_cfg.tokenizer_path!r}) has {len(tokenizer)} tokens but the model "
            f"({field_prefix}.name_or_path={model_cfg.name_or_path!r}) has only "
            f"{vocab} embeddings"
        )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    generation = getattr(model, "generation_config", None)
    if generation is not None and generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id
    if model_cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    own_aligned_memory(model)
    return model


_CPU_ALIGNMENT = 64  # bytes; what torch's CPU allocator guarantees


def own_aligned_memory(model: "PreTrainedModel") -> "PreTrainedModel":
    """Copy CPU tensors that ``from_pretrained`` left as views into the mmapped safetensors file.

    Those views sit at arbitrary offsets of the file, and CPU matmul kernels round differently on
    misaligned data, so a reloaded model would differ from the saved one in the last bit.  After
    the copy a reload gives bit-identical outputs.  ZeRO-3 partitions and device tensors are
    already owned copies and are left alone.
    """
    tensors = list(model.parameters()) + list(model.buffers())
    for tensor in tensors:
        if tensor.device.type != "cpu" or hasattr(tensor, "ds_id") or tensor.numel() == 0:
            continue
        if tensor.data_ptr() % _CPU_ALIGNMENT:
            tensor.data = tensor.data.clone()
    return model


def enable_gradient_checkpointing(model: "PreTrainedModel") -> None:
    """Non-reentrant activation checkpointing (the variant that works with ZeRO-3); no KV cache.

    transformers >= 5.20 calls it ``activation_checkpointing_enable`` (the old name warns);
    earlier 5.x releases -- the vLLM extra's -- have only ``gradient_checkpointing_enable``.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def checkpointing_enabled(model: "PreTrainedModel") -> bool:
    """Whether activation checkpointing is on (either transformers 5.x name of the flag)."""
    flag = getattr(model, "is_activation_checkpointing", None)
    return bool(model.is_gradient_checkpointing if flag is None else flag)


def load_causal_lm(
    model_cfg: "ModelConfig", tokenizer: "PreTrainedTokenizerBase", field_prefix: str = "model"
) -> "PreTrainedModel":
    """A causal LM for ``model_cfg``: ``from_pretrained(name_or_path)`` or a tiny ``from_config``.

    Both paths go through transformers' own constructors, so inside a DeepSpeed ZeRO-3
    ``HfDeepSpeedConfig`` context the parameters are created partitioned (``zero.Init``).
    A tiny model is randomly initialised from torch's global RNG: call ``torch.manual_seed``
    first for a reproducible model.  Errors name ``{field_prefix}.<key>``.
    """
    require_existing_path(model_cfg.name_or_path, f"{field_prefix}.name_or_path")
    kwargs = hf_load_kwargs(model_cfg, field_prefix)
    from transformers import AutoModelForCausalLM

    if model_cfg.name_or_path is None:
        config = tiny_config_for(model_cfg, tokenizer, field_prefix)
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    else:
        source = resolve_source(model_cfg.name_or_path)
        _refuse_scalar_checkpoint(source, kwargs["trust_remote_code"], field_prefix)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    return prepare_model(model, model_cfg, tokenizer, field_prefix)


def _refuse_scalar_checkpoint(source: str, trust_remote_code: bool, field_prefix: str) -> None:
    """A reward / critic checkpoint has no LM head: loading it as a policy is always a mistake."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    if is_scalar_head_config(config) or is_sequence_classifier(config):
        kind = (
            f"{config.rlhf_dist['head']} model"
            if is_scalar_head_config(config)
            else config.architectures[0]
        )
        raise ModelError(
            f"{field_prefix}.name_or_path: {source!r} is a {kind} (a score "
            "head, no LM head); it cannot be loaded as a causal LM"
        )

"""HF configs for tiny randomly initialised models (tests, the demo): ``model.tiny.*`` → config.

One builder per architecture in :data:`TINY_ARCHS`.  Dropout is zero everywhere: RLHF compares
log-probabilities of the same tokens across forwards (old vs new policy, policy vs reference),
which dropout would make noisy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from rlhf_dist.models._common import ModelError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig

    from rlhf_dist.config import TinyModelConfig


def _llama(tiny: "TinyModelConfig", common: Dict[str, Any]) -> "PretrainedConfig":
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=tiny.hidden_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        intermediate_size=tiny.intermediate_size,
        max_position_embeddings=tiny.max_position_embeddings,
        attention_dropout=0.0,
        **common,
    )


def _qwen2(tiny: "TinyModelConfig", common: Dict[str, Any]) -> "PretrainedConfig":
    from transformers import Qwen2Config

    return Qwen2Config(
        hidden_size=tiny.hidden_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_heads,
        intermediate_size=tiny.intermediate_size,
        max_position_embeddings=tiny.max_position_embeddings,
        attention_dropout=0.0,
        **common,
    )


def _gpt2(tiny: "TinyModelConfig", common: Dict[str, Any]) -> "PretrainedConfig":
    from transformers import GPT2Config

    return GPT2Config(
        n_embd=tiny.hidden_size,
        n_layer=tiny.num_layers,
        n_head=tiny.num_heads,
        n_inner=tiny.intermediate_size,
        n_positions=tiny.max_position_embeddings,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **common,
    )


TINY_ARCHS: Dict[str, Callable[["TinyModelConfig", Dict[str, Any]], "PretrainedConfig"]] = {
    "llama": _llama,
    "gpt2": _gpt2,
    "qwen2": _qwen2,
}


def _check_token_id(name: str, value: Optional[int], vocab_size: int, field: str) -> None:
    if value is not None and not 0 <= value < vocab_size:
        raise ModelError(f"{field}: {name}={value} is outside the vocabulary [0, {vocab_size})")


def build_tiny_config(
    tiny_cfg: "TinyModelConfig",
    vocab_size: int,
    pad_token_id: Optional[int] = None,
    bos_token_id: Optional[int] = None,
    eos_token_id: Optional[int] = None,
    field_prefix: str = "model",
) -> "PretrainedConfig":
    """An HF ``PretrainedConfig`` of architecture ``tiny_cfg.arch`` with the configured sizes.

    ``vocab_size`` is the tokenizer's ``len(tokenizer)``; the special ids are the tokenizer's.
    Errors name ``{field_prefix}.tiny.<key>``.
    """
    field = f"{field_prefix}.tiny"
    builder = TINY_ARCHS.get(tiny_cfg.arch)
    if builder is None:
        raise ModelError(f"{field}.arch: got {tiny_cfg.arch!r}, expected one of {list(TINY_ARCHS)}")
    if not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ModelError(f"{field}: vocab_size must be a positive int, got {vocab_size!r}")
    ids = {"pad_token_id": pad_token_id, "bos_token_id": bos_token_id, "eos_token_id": eos_token_id}
    for name, value in ids.items():
        _check_token_id(name, value, vocab_size, field)
    return builder(tiny_cfg, {"vocab_size": vocab_size, **ids})

"""Tokenizer loading: a local path or hub name via ``AutoTokenizer``, else the toy tokenizer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

from rlhf_dist.models._common import ModelError, require_existing_path, resolve_source
from rlhf_dist.toy import toy_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

    from rlhf_dist.config import ModelConfig


def tokenizer_source(
    model_cfg: "ModelConfig", field_prefix: str = "model"
) -> Tuple[Optional[str], str]:
    """``(source, field)``: where the tokenizer comes from and the config field that said so.

    ``tokenizer_path`` wins over ``name_or_path``; ``(None, ...)`` means the toy tokenizer.
    """
    if model_cfg.tokenizer_path is not None:
        return model_cfg.tokenizer_path, f"{field_prefix}.tokenizer_path"
    return model_cfg.name_or_path, f"{field_prefix}.name_or_path"


def ensure_pad_token(tokenizer: "PreTrainedTokenizerBase", field: str) -> "PreTrainedTokenizerBase":
    """Give ``tokenizer`` a pad token: its own, else the EOS token (no new vocabulary entry).

    Padding with EOS is safe because every consumer passes an attention mask; it keeps the
    vocabulary, and therefore the embedding matrix, unchanged.  Without pad and EOS tokens there is
    nothing sensible to pad with, so that is an error naming ``field``.
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(
                f"{field}: the tokenizer has neither a pad token nor an EOS token "
                "to pad with; add one to the tokenizer"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(
    model_cfg: "ModelConfig", field_prefix: str = "model"
) -> "PreTrainedTokenizerBase":
    """The tokenizer of one model section (``model``, ``ref_model``, ``reward_model``, …).

    Source: ``tokenizer_path`` or else ``name_or_path`` through ``AutoTokenizer`` (with the
    section's ``trust_remote_code``, default False); both null → the toy task's trained tokenizer.
    A missing local path raises :class:`ModelError` naming the field before anything is read.
    The padding side is left as the tokenizer defines it; collators choose it per use.
    """
    require_existing_path(model_cfg.name_or_path, f"{field_prefix}.name_or_path")
    source, field = tokenizer_source(model_cfg, field_prefix)
    require_existing_path(source, field)
    if source is None:
        tokenizer = toy_tokenizer()
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            resolve_source(source), trust_remote_code=bool(model_cfg.trust_remote_code)
        )
    return ensure_pad_token(tokenizer, field)

"""Data: rows from the toy task, local files or the hub → tokenised examples → padded batches.

Pipeline: :func:`select_rows` / :func:`load_rows` (sources) → :mod:`.convert` (row → prompt
and response texts, configurable keys, chat template) → :mod:`.tokenization` (ids,
truncation, label masking) → ``build_*_dataset`` (eager, with bad-row handling) →
collators (padded torch tensors).  The conversation format is documented in
:mod:`.formatting`; the toy task in :mod:`.toy`; the toy tokenizer in :mod:`.toy_bpe`.

Importing this package is cheap: ``torch``, ``datasets`` and ``transformers`` are imported
on first use.
"""
from .builders import (
    EXAMPLE_KINDS, TokenizedDataset, build_dataset, build_lm_dataset, build_preference_dataset,
    build_prompt_dataset, build_sft_dataset, tokenize_rows,
)
from .collate import (PreferenceCollator, PromptCollator, SFTCollator, SharedPromptCollator, pad,
                      shared_prompt_attention_mask)
from .convert import (
    Renderer, RowKeys, preference_texts, prompt_text, ranking_pair_order, sft_text,
    split_transcripts,
)
from .errors import DataError, DataFileNotFoundError, RowError
from .formatting import (
    ASSISTANT, CHAT_TEMPLATE, HUMAN, render_messages, render_prompt, render_response,
)
from .sources import RowSet, classify_path, holdout_split, load_rows, select_rows
from .tokenization import IGNORE_INDEX, Encoder, join_response, truncate_left
from .toy import (
    TOY_ROW_KINDS, ToyPrompt, ToyTask, find_topic, is_on_topic, is_refusal, prompt_kind,
    toy_corpus,
)
from .toy_bpe import (
    BOS, EOS, PAD, UNK, default_cache_dir, toy_tokenizer, toy_tokenizer_path, train_toy_tokenizer,
)

__all__ = [
    "ASSISTANT", "BOS", "CHAT_TEMPLATE", "DataError", "DataFileNotFoundError", "EOS",
    "EXAMPLE_KINDS", "Encoder", "HUMAN", "IGNORE_INDEX", "PAD", "PreferenceCollator",
    "PromptCollator", "Renderer", "RowError", "RowKeys", "RowSet", "SFTCollator",
    "SharedPromptCollator", "TOY_ROW_KINDS", "TokenizedDataset", "ToyPrompt", "ToyTask", "UNK", "build_dataset", "classify_path", "build_lm_dataset",
    "build_preference_dataset", "build_prompt_dataset", "build_sft_dataset", "default_cache_dir",
    "find_topic", "holdout_split", "is_on_topic", "is_refusal", "join_response", "load_rows",
    "pad", "preference_texts", "prompt_kind", "prompt_text", "ranking_pair_order",
    "render_messages", "render_prompt", "render_response", "select_rows",
    "shared_prompt_attention_mask", "sft_text",
    "split_transcripts", "tokenize_rows", "toy_corpus", "toy_tokenizer", "toy_tokenizer_path",
    "train_toy_tokenizer", "truncate_left",
]

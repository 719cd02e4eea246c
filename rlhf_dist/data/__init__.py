"""Data: rows from the toy task, local files or the hub → tokenised examples → padded batches.

Pipeline: :func:`select_rows` / :func:`load_rows` (sources) → :mod:`.convert` (row → prompt
and response texts, configurable keys, chat template) → :mod:`.tokenization` (ids,
truncation, label masking) → ``build_*_dataset`` (eager, with bad-row handling) →
collators (padded torch tensors, or padding-free rows: :mod:`.packing`).  The conversation
format is documented in :mod:`.formatting`; the built-in toy task (the rows when no path is
given) and its tokenizer are :mod:`rlhf_dist.toy`.

Importing this package is cheap: ``torch``, ``datasets`` and ``transformers`` are imported
on first use.
"""

from .builders import (
    EXAMPLE_KINDS,
    TokenizedDataset,
    build_dataset,
    build_lm_dataset,
    build_preference_dataset,
    build_prompt_dataset,
    build_sft_dataset,
    build_unpaired_dataset,
    preference_datasets,
    tokenize_rows,
)
from .collate import (
    PAIR_COLLATORS,
    PreferenceCollator,
    PromptCollator,
    SFTCollator,
    SharedPromptCollator,
    UnpairedCollator,
    kl_pairs,
    lm_collator,
    pad,
    shared_prompt_attention_mask,
)
from .packing import PackedLMCollator, PackedPairCollator, is_packed, pack
from .convert import (
    Renderer,
    RowKeys,
    preference_texts,
    prompt_text,
    ranking_pair_order,
    sft_text,
    split_transcripts,
)
from .errors import DataError, DataFileNotFoundError, RowError
from .formatting import (
    ASSISTANT,
    CHAT_TEMPLATE,
    HUMAN,
    render_messages,
    render_prompt,
    render_response,
)
from .sources import RowSet, classify_path, holdout_split, load_rows, select_rows
from .tokenization import IGNORE_INDEX, Encoder, join_response, truncate_left

__all__ = [
    "ASSISTANT",
    "CHAT_TEMPLATE",
    "DataError",
    "DataFileNotFoundError",
    "EXAMPLE_KINDS",
    "Encoder",
    "HUMAN",
    "IGNORE_INDEX",
    "PAIR_COLLATORS",
    "PackedLMCollator",
    "PackedPairCollator",
    "PreferenceCollator",
    "PromptCollator",
    "Renderer",
    "RowError",
    "RowKeys",
    "RowSet",
    "SFTCollator",
    "SharedPromptCollator",
    "TokenizedDataset",
    "UnpairedCollator",
    "kl_pairs",
    "build_dataset",
    "build_lm_dataset",
    "build_preference_dataset",
    "build_prompt_dataset",
    "build_sft_dataset",
    "build_unpaired_dataset",
    "classify_path",
    "holdout_split",
    "is_packed",
    "join_response",
    "lm_collator",
    "load_rows",
    "pack",
    "pad",
    "preference_datasets",
    "preference_texts",
    "prompt_text",
    "ranking_pair_order",
    "render_messages",
    "render_prompt",
    "render_response",
    "select_rows",
    "sft_text",
    "shared_prompt_attention_mask",
    "split_transcripts",
    "tokenize_rows",
    "truncate_left",
]

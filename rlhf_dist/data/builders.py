"""Tokenised, map-style datasets for each trainer, built eagerly from a ``DataConfig``.

``build_sft_dataset`` / ``build_preference_dataset`` / ``build_prompt_dataset`` /
``build_lm_dataset`` → :class:`TokenizedDataset` (or None for ``split="eval"`` when the config
has no eval data; see :func:`~.sources.select_rows`).  Each row goes through
:mod:`.convert` (texts) and :mod:`.tokenization` (ids); a bad row raises a
:class:`~.errors.DataError` naming the source, the row index and the field, unless
``data_cfg.on_bad_row == "skip"``: then it is left out, counted in ``num_skipped`` and
reported with one ``logging.warning``.

Example dicts hold python lists of ints (the collators make tensors):

* sft / lm: ``input_ids``, ``labels``, ``prompt_len`` (0 for lm); a ``messages`` row's
  labels cover every assistant turn (its other turns after the prompt are ``-100`` too);
* preference: ``chosen_input_ids``, ``chosen_labels``, ``rejected_input_ids``,
  ``rejected_labels``, ``prompt_len`` — one example per pair (a ranking row gives C(K, 2));
* unpaired (KTO): ``input_ids``, ``labels``, ``prompt_len``, ``completion_ids`` (the answer's
  own ids, for the mismatched pairs :class:`~.collate.UnpairedCollator` builds) and
  ``desirable`` — one example per row, or with ``data.split_pairs`` two per preference pair
  (chosen desirable, then rejected undesirable);
* prompt: ``input_ids`` (left-truncated prompt), ``prompt`` (its text), ``kind`` when the
  row has a string ``kind`` column (the toy task's ``harmful``/``benign``), ``label`` (the
  ``data.label_key`` column, any JSON value) and ``extras`` (``{key: value}`` of
  ``data.extra_keys``) when configured.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from .convert import (
    ABSENT,
    Renderer,
    RowKeys,
    check_string,
    field_value,
    preference_texts,
    prompt_text,
    sft_text,
    sft_turns,
    unpaired_text,
)
from .errors import DataError, RowError
from .sources import RowSet, select_rows
from .tokenization import Encoder, Example

logger = logging.getLogger(__name__)
MAX_REASONS_LOGGED = 3
TEXT_KEY = "text"


class TokenizedDataset:
    """A list of tokenised examples (``len``, indexing, iteration), usable by a torch
    ``DataLoader``; ``num_skipped`` bad rows were left out, described in ``skipped``."""

    def __init__(
        self, examples: List[Example], source: str = "", skipped: Optional[List[str]] = None
    ):
        self.examples, self.source, self.skipped = examples, source, list(skipped or [])

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    def __iter__(self):
        return iter(self.examples)

    def __repr__(self) -> str:
        return (
            f"TokenizedDataset({len(self)} examples from {self.source!r}, "
            f"{self.num_skipped} skipped)"
        )


MakeExamples = Callable[[Mapping], List[Example]]


def tokenize_rows(rows: RowSet, make: MakeExamples, on_bad_row: str = "error") -> TokenizedDataset:
    """Apply ``make`` to every row; a :class:`RowError` becomes a :class:`DataError` or a skip."""
    examples: List[Example] = []
    skipped: List[str] = list(rows.skipped)
    for row_id, row in zip(rows.row_ids, rows.rows):
        try:
            examples.extend(make(row))
        except RowError as err:
            bad = DataError.bad_row(rows.source, row_id, err.field, err.reason)
            if on_bad_row != "skip":
                raise bad from None
            skipped.append(str(bad))
    if skipped:
        logger.warning(
            "%s: skipped %d bad row(s) (data.on_bad_row=skip); first: %s",
            rows.source,
            len(skipped),
            "; ".join(skipped[:MAX_REASONS_LOGGED]),
        )
    return TokenizedDataset(examples, rows.source, skipped)


# --------------------------------------------------------------------------- example makers


class _Context(NamedTuple):
    keys: RowKeys
    renderer: Renderer
    encoder: Encoder
    train_on_prompt: bool = False
    label_key: Optional[str] = None  # prompt rows: data.label_key, data.extra_keys
    extra_keys: Tuple[str, ...] = ()
    split_pairs: bool = False  # unpaired rows from preference pairs (data.split_pairs)


def _sft(ctx: _Context, row: Mapping) -> List[Example]:
    if row.get(ctx.keys.messages) is not None:  # every assistant turn trained
        prompt, segments = sft_turns(row, ctx.keys, ctx.renderer)
        return [ctx.encoder.turns(prompt, segments, ctx.keys.messages, ctx.train_on_prompt)]
    prompt, response = sft_text(row, ctx.keys, ctx.renderer)
    return [ctx.encoder.sft(prompt, response.text, response.field, ctx.train_on_prompt)]


def _preference(ctx: _Context, row: Mapping) -> List[Example]:
    return [
        ctx.encoder.preference(prompt, good.text, bad.text, (good.field, bad.field))
        for prompt, good, bad in preference_texts(row, ctx.keys, ctx.renderer)
    ]


def _unpaired(ctx: _Context, row: Mapping) -> List[Example]:
    if ctx.split_pairs:  # each pair -> its chosen answer desirable, its rejected undesirable
        return [
            ctx.encoder.unpaired(prompt, piece.text, desirable, piece.field)
            for prompt, good, bad in preference_texts(row, ctx.keys, ctx.renderer)
            for piece, desirable in ((good, True), (bad, False))
        ]
    prompt, completion, desirable = unpaired_text(row, ctx.keys, ctx.renderer)
    return [ctx.encoder.unpaired(prompt, completion.text, desirable, completion.field)]


def _prompt(ctx: _Context, row: Mapping) -> List[Example]:
    text = prompt_text(row, ctx.keys, ctx.renderer)
    example: Example = {"input_ids": ctx.encoder.prompt(text), "prompt": text}
    if isinstance(row.get("kind"), str):
        example["kind"] = row["kind"]
    if ctx.label_key is not None:
        label = field_value(row, ctx.label_key)
        if label is None:
            raise RowError(ctx.label_key, "missing (no label in this row; data.label_key)")
        example["label"] = label
    if ctx.extra_keys:
        values = {key: field_value(row, key, ABSENT) for key in ctx.extra_keys}
        absent = [key for key, value in values.items() if value is ABSENT]
        if absent:
            raise RowError(absent[0], "missing (a column of data.extra_keys)")
        example["extras"] = values
    return [example]


def _lm(ctx: _Context, row: Mapping) -> List[Example]:
    return [ctx.encoder.lm(check_string(row.get(TEXT_KEY), TEXT_KEY), TEXT_KEY)]


class ExampleKind(NamedTuple):
    toy_kind: str  # which toy rows feed it by default
    make: Callable[[_Context, Mapping], List[Example]]
    responses: bool  # its examples join a prompt and a response within data.max_length


EXAMPLE_KINDS: Dict[str, ExampleKind] = {
    "sft": ExampleKind("sft", _sft, True),
    "preference": ExampleKind("preference", _preference, True),
    "unpaired": ExampleKind("unpaired", _unpaired, True),
    "prompt": ExampleKind("prompt", _prompt, False),
    "lm": ExampleKind("pretrain", _lm, False),
}


def build_dataset(
    kind: str,
    data_cfg,
    tokenizer,
    split: str = "train",
    toy_kind: Optional[str] = None,
    train_on_prompt: bool = False,
) -> Optional[TokenizedDataset]:
    """Tokenised examples of ``kind`` (a key of :data:`EXAMPLE_KINDS`) for ``split``.

    ``toy_kind`` picks other toy rows for the same examples (e.g. ``ranking`` or ``hh`` for
    preference); it is ignored for non-toy paths.  ``train_on_prompt`` (sft only) leaves the
    prompt positions of ``labels`` unmasked.
    """
    spec = EXAMPLE_KINDS[kind]
    if spec.responses:
        data_cfg.check_response_room()
    rows = select_rows(data_cfg, split, toy_kind or spec.toy_kind)
    if rows is None:
        return None
    if data_cfg.apply_chat_template and not getattr(tokenizer, "chat_template", None):
        raise DataError("data.apply_chat_template is true but the tokenizer has no chat_template")
    ctx = _Context(
        RowKeys.from_config(data_cfg),
        Renderer(tokenizer, data_cfg.apply_chat_template),
        Encoder(
            tokenizer,
            data_cfg.max_length,
            data_cfg.max_prompt_length,
            add_bos=not data_cfg.apply_chat_template,
        ),
        train_on_prompt,
        data_cfg.label_key,
        tuple(data_cfg.extra_keys),
        data_cfg.split_pairs,
    )
    return tokenize_rows(rows, lambda row: spec.make(ctx, row), data_cfg.on_bad_row)


def build_sft_dataset(
    data_cfg, tokenizer, split: str = "train", train_on_prompt: bool = False
) -> Optional[TokenizedDataset]:
    """SFT examples (prompt masked in ``labels`` unless ``train_on_prompt``)."""
    return build_dataset("sft", data_cfg, tokenizer, split, train_on_prompt=train_on_prompt)


def build_preference_dataset(
    data_cfg, tokenizer, split: str = "train", toy_kind: str = "preference"
) -> Optional[TokenizedDataset]:
    """Preference pairs for the reward model and DPO (ranking rows expand to pairs)."""
    return build_dataset("preference", data_cfg, tokenizer, split, toy_kind)


def preference_datasets(data_cfg, tokenizer, layout: str = "padded"):
    """(train, eval or None, collator) of preference pairs -- RM, DPO and DPO on Ray; the
    collator of ``layout`` (:data:`~.collate.PAIR_COLLATORS`; the RM scores padded or packed
    rows)."""
    from .collate import PAIR_COLLATORS

    return (
        build_preference_dataset(data_cfg, tokenizer, split="train"),
        build_preference_dataset(data_cfg, tokenizer, split="eval"),
        PAIR_COLLATORS[layout](tokenizer.pad_token_id),
    )


def build_unpaired_dataset(data_cfg, tokenizer, split: str = "train") -> Optional[TokenizedDataset]:
    """Unpaired answers with a desirable / undesirable label (KTO); from preference rows,
    each pair split in two, with ``data.split_pairs`` (the toy task's ``preference`` rows,
    else its ``unpaired`` ones)."""
    return build_dataset(
        "unpaired", data_cfg, tokenizer, split, "preference" if data_cfg.split_pairs else "unpaired"
    )


def build_prompt_dataset(data_cfg, tokenizer, split: str = "train") -> Optional[TokenizedDataset]:
    """Prompts for PPO rollouts / evaluation (``input_ids`` + ``prompt`` text)."""
    return build_dataset("prompt", data_cfg, tokenizer, split)


def build_lm_dataset(data_cfg, tokenizer, split: str = "train") -> Optional[TokenizedDataset]:
    """Plain language-modelling texts (``text`` column; the toy task's pretraining corpus)."""
    return build_dataset("lm", data_cfg, tokenizer, split)

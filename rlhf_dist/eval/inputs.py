"""What an evaluation reads: prompts to answer and a reference set for perplexity.

Both go through the data package's loaders (:func:`rlhf_dist.data.load_rows`: ``toy``, a local
jsonl/json/parquet/csv file or directory, or a hub dataset) and row conversion (configurable
keys; a prompt may be a string or a message list, rendered in the plain ``Human:/Assistant:``
format).  A bad row raises :class:`~rlhf_dist.data.DataError` naming the source, row and field.
"""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Tuple

from rlhf_dist.data.convert import Renderer, RowKeys, field_value, prompt_text, sft_text
from rlhf_dist.data.errors import DataError, RowError
from rlhf_dist.data.sources import TOY, load_rows, source_name

KINDS = ("harmful", "benign")


class PromptSet(NamedTuple):
    """Prompt texts and, per prompt, ``"harmful"`` / ``"benign"`` / None (the toy judges' key)
    and its label (the ``labels_key`` column; None without one)."""

    prompts: List[str]
    kinds: List[Optional[str]]
    labels: Optional[List[Any]] = None

    @property
    def has_kinds(self) -> bool:
        return any(k is not None for k in self.kinds)


def default_split(path: str) -> str:
    """``eval`` for the toy task (its held-out prompts), ``train`` (a lone file's split) else."""
    return "eval" if path == TOY else "train"


def _rows(path: str, split: Optional[str], kind: str, max_samples: Optional[int]):
    split = split or default_split(path)
    rows = load_rows(path, split, kind)
    if max_samples is not None:
        rows = rows.select(range(min(max_samples, len(rows))))
    return rows, source_name(path, split, kind)


def load_prompts(
    path: str,
    prompt_key: str = "prompt",
    split: Optional[str] = None,
    max_samples: Optional[int] = None,
    labels_key: Optional[str] = None,
) -> PromptSet:
    """Prompts of ``path`` (``toy``: the toy task's held-out prompts).

    The ``prompt_key`` column (a string or a message list) is the prompt; a ``kind`` column with
    ``harmful`` / ``benign`` (the toy task has one) enables harmlessness and helpfulness;
    ``labels_key`` names the column of each prompt's label (any JSON value; a row without it
    is a bad row) for a verifier.
    """
    rows, source = _rows(path, split, "prompt", max_samples)
    keys = RowKeys(prompt=prompt_key)
    prompts, kinds, labels = [], [], []
    for i, row in enumerate(rows):
        try:
            prompts.append(prompt_text(row, keys, Renderer()))
            if labels_key is not None:
                label = field_value(row, labels_key)  # a dotted key reaches nested values
                if label is None:
                    raise RowError(
                        labels_key, "missing (--label-key, data.label_key, names the label column)"
                    )
                labels.append(label)
        except RowError as err:
            raise DataError.bad_row(source, i, err.field, err.reason) from None
        kind = row.get("kind")
        kinds.append(kind if kind in KINDS else None)
    if not prompts:
        raise DataError(f"{source}: no prompts")
    return PromptSet(prompts, kinds, labels if labels_key is not None else None)


def load_reference(
    path: str,
    prompt_key: str = "prompt",
    response_key: str = "response",
    split: Optional[str] = None,
    max_samples: Optional[int] = None,
) -> List[Tuple[str, str]]:
    """``(prompt, response)`` pairs of ``path`` for perplexity (``toy``: the held-out SFT rows,
    i.e. the aligned answers).  ``messages`` rows work too (last turn = response)."""
    rows, source = _rows(path, split, "sft", max_samples)
    keys = RowKeys(prompt=prompt_key, response=response_key)
    pairs = []
    for i, row in enumerate(rows):
        try:
            prompt, piece = sft_text(row, keys, Renderer())
        except RowError as err:
            raise DataError.bad_row(source, i, err.field, err.reason) from None
        pairs.append((prompt, piece.text))
    if not pairs:
        raise DataError(f"{source}: no reference rows")
    return pairs


__all__ = ["PromptSet", "default_split", "load_prompts", "load_reference"]

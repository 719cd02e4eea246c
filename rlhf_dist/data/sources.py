"""Where rows come from: the toy task, local files or directories, or the Hugging Face hub.

:func:`load_rows` loads one ``(path, split)`` as a ``datasets.Dataset``.  ``path`` is tried
against :data:`SOURCES` in order:

1. ``"toy"`` — the built-in task (``kind`` ∈ :data:`~rlhf_dist.toy.TOY_ROW_KINDS`,
   split ``train`` or ``eval``; ``test``/``validation`` mean ``eval``);
2. an existing local file: ``.jsonl``/``.json``/``.parquet``/``.csv`` (all rows; ``split`` is
   ignored, as ``datasets`` puts a lone file in ``train``);
3. an existing local directory: one written by ``save_to_disk`` (a ``DatasetDict`` is indexed by
   ``split``) or one holding data files (``datasets`` infers the splits from file names);
4. something that looks like a local path (a data-file suffix, ``/``, ``./``, ``~`` …) but does
   not exist: :class:`~rlhf_dist.data.errors.DataFileNotFoundError` naming it;
5. anything else is a hub dataset name: ``datasets.load_dataset(name, split=split)``.

:func:`select_rows` resolves the train / eval split of a :class:`DataConfig` and remembers the
original row index of every row, which bad-row errors report (0-based).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from contextlib import contextmanager
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Tuple

from .errors import DataError, DataFileNotFoundError, MalformedLines

TOY = "toy"
FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
TOY_SPLITS = {"train": "train", "eval": "eval", "test": "eval", "validation": "eval"}
HOLDOUT_SEED = 1234


class Source(NamedTuple):
    name: str
    matches: Callable[[str], bool]
    load: Callable[..., object]  # (path, split, kind, toy_cfg) -> datasets.Dataset


# --------------------------------------------------------------------------- loaders


@contextmanager
def _quiet_progress():
    """No "Generating train split" bars for our small files; the user's setting is restored."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _load_toy(path: str, split: str, kind: str, toy_cfg) -> object:
    from datasets import Dataset

    from rlhf_dist.toy import ToyTask

    if split not in TOY_SPLITS:
        raise DataError(f"toy: unknown split {split!r} (use one of {sorted(TOY_SPLITS)})")
    task = ToyTask() if toy_cfg is None else ToyTask.from_config(toy_cfg)
    try:
        rows = task.rows(kind, TOY_SPLITS[split])
    except ValueError as err:
        raise DataError(f"toy: {err}") from None
    return Dataset.from_list(rows)


def _load_file(path: str, split: str, kind: str, toy_cfg) -> object:
    import datasets

    builder = FILE_FORMATS.get(Path(path).suffix.lower())
    if builder is None:
        raise DataError(f"{path}: unsupported file type (use one of {sorted(FILE_FORMATS)})")
    jsonl = Path(path).suffix.lower() == ".jsonl"
    if jsonl and not _is_utf8(path):  # pyarrow would load the bytes and fail on first use
        _raise_malformed_lines(path)
    try:
        with _quiet_progress():
            return datasets.load_dataset(builder, data_files=path, split="train")
    except Exception as err:  # noqa: BLE001 — any parse failure becomes a DataError
        if jsonl:
            _raise_malformed_lines(path)
        raise DataError(f"{path}: could not read it as {builder}: {err}") from err


def _is_utf8(path: str, chunk: int = 1 << 20) -> bool:
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        try:
            while block := f.read(chunk):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _json_kind(value) -> Optional[str]:
    """The JSON type of a value, as a column holds it (None: null fits every column)."""
    if value is None:
        return None
    for kind, types in (
        ("boolean", bool),
        ("number", (int, float)),
        ("string", str),
        ("list", list),
        ("object", dict),
    ):
        if isinstance(value, types):
            return kind
    return type(value).__name__


def _mixed_types(path: str, numbered: List[Tuple[int, dict]]) -> List[Tuple[int, str]]:
    """``(line, reason)`` of each row with a field whose JSON type differs from what most rows
    have there (a column holds one type: pyarrow refuses the file otherwise)."""
    kinds: dict = {}
    for _, row in numbered:
        for key, value in row.items():
            kind = _json_kind(value)
            if kind is not None:
                kinds.setdefault(key, Counter())[kind] += 1
    usual = {key: counts.most_common(1)[0][0] for key, counts in kinds.items()}
    bad = []
    for number, row in numbered:
        for key, value in row.items():
            kind = _json_kind(value)
            if kind is not None and kind != usual[key]:
                bad.append(
                    (
                        number,
                        f"{path} line {number}: field '{key}' is a {kind} where "
                        f"the other rows have a {usual[key]}",
                    )
                )
                break
    return bad


def _raise_malformed_lines(path: str) -> None:
    """A JSON Lines file ``datasets`` could not read: find the lines that are not a JSON
    object, or whose field has another JSON type than the other rows' (one type per column),
    by number (the rows that remain travel with the error, for ``skip``)."""
    numbered, bad = [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:  # a byte-order mark at the start of the file is not part of the row
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                bad.append(
                    (
                        number,
                        f"{path} line {number}: not UTF-8 text (byte "
                        f"0x{raw[err.start]:02x} at position {err.start})",
                    )
                )
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                bad.append(
                    (
                        number,
                        f"{path} line {number}: not valid JSON ({err.msg} at column {err.colno})",
                    )
                )
                continue
            if isinstance(row, dict):
                numbered.append((number, row))
            else:
                bad.append(
                    (number, f"{path} line {number}: a JSON {type(row).__name__}, not an object")
                )
    bad += _mixed_types(path, numbered)
    if bad:
        dropped = {number for number, _ in bad}
        raise MalformedLines(
            path,
            [reason for _, reason in sorted(bad)],
            [row for number, row in numbered if number not in dropped],
        )


def _dataset_of(rows: List[dict]):
    """A ``datasets.Dataset`` of ``rows`` with every key any row has (``from_list`` takes the
    first row's keys only: a first row missing a field would drop it from every row)."""
    from datasets import Dataset

    keys = list(dict.fromkeys(key for row in rows for key in row))
    return Dataset.from_dict({key: [row.get(key) for row in rows] for key in keys})


def _pick_split(loaded, path: str, split: str):
    if not hasattr(loaded, "keys"):  # a plain Dataset saved without splits
        return loaded
    if split not in loaded:
        raise DataError(f"{path}: no split {split!r} (available: {sorted(loaded.keys())})")
    return loaded[split]


def _load_dir(path: str, split: str, kind: str, toy_cfg) -> object:
    import datasets

    if any((Path(path) / marker).is_file() for marker in SAVED_MARKERS):
        return _pick_split(datasets.load_from_disk(path), path, split)
    try:
        with _quiet_progress():
            return datasets.load_dataset(path, split=split)
    except Exception as err:  # noqa: BLE001
        raise DataError(
            f"{path}: could not load split {split!r} from the directory: {err}"
        ) from err


def _looks_like_path(path: str) -> bool:
    return (
        Path(path).suffix.lower() in FILE_FORMATS
        or path.startswith(("/", ".", "~"))
        or path.count("/") > 1
        or os.sep != "/"
        and os.sep in path
    )


def _missing(path: str, split: str, kind: str, toy_cfg) -> object:
    raise DataFileNotFoundError(f"{path}: no such data file or directory", source=path)


def _load_hub(path: str, split: str, kind: str, toy_cfg) -> object:
    import datasets

    try:
        return datasets.load_dataset(path, split=split)
    except Exception as err:  # noqa: BLE001
        raise DataError(
            f"{path}: not a local file, and loading it from the Hugging Face hub "
            f"(split {split!r}) failed: {err}"
        ) from err


SOURCES: Tuple[Source, ...] = (
    Source("toy", lambda p: p == TOY, _load_toy),
    Source("file", os.path.isfile, _load_file),
    Source("directory", os.path.isdir, _load_dir),
    Source("missing path", _looks_like_path, _missing),
    Source("hub", lambda p: True, _load_hub),
)


def _expand(path: str) -> str:
    return path if path == TOY else os.path.expanduser(path)


def _source_of(path: str) -> Source:
    return next(s for s in SOURCES if s.matches(_expand(path)))


def classify_path(path: str) -> str:
    """Which of :data:`SOURCES` handles ``path``: toy, file, directory, missing path or hub."""
    return _source_of(path).name


def source_name(path: str, split: str, kind: str) -> str:
    """How errors name a source: the file path, ``dir [split]``, ``toy:kind/split``."""
    source = classify_path(path)
    if source == "toy":
        return f"toy:{kind}/{TOY_SPLITS.get(split, split)}"
    return path if source in ("file", "missing path") else f"{path} [{split}]"


def _load_all(path: str, split: str, kind: str, toy_cfg=None):
    return _source_of(path).load(_expand(path), split, kind, toy_cfg)


def load_rows(path: str, split: str = "train", kind: str = "sft", data_cfg=None):
    """Rows of ``path`` / ``split`` as a ``datasets.Dataset``, first ``data_cfg.max_samples``.

    ``kind`` only matters for the toy task; ``data_cfg`` (a ``DataConfig``, optional) gives
    ``max_samples`` and the toy settings.
    """
    rows = _load_all(path, split, kind, getattr(data_cfg, "toy", None))
    cap = getattr(data_cfg, "max_samples", None)
    return rows.select(range(min(cap, len(rows)))) if cap is not None else rows


# --------------------------------------------------------------------------- train / eval


@dataclass
class RowSet:
    """Rows plus where they came from: ``row_ids[i]`` is row i's index in the source."""

    rows: object  # datasets.Dataset
    source: str
    row_ids: List[int]
    skipped: List[str] = field(default_factory=list)  # lines dropped before the rows


def holdout_split(n: int, ratio: float, seed: int = HOLDOUT_SEED) -> Tuple[List[int], List[int]]:
    """Deterministic (train_ids, eval_ids) of ``n`` rows, ``round(n * ratio)`` held out
    (at least one when ``ratio > 0``, never all); both lists sorted."""
    n_eval = min(max(round(n * ratio), 1 if ratio > 0 else 0), max(n - 1, 0))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def _row_set(path: str, split: str, kind: str, data_cfg, holdout: Optional[str] = None) -> RowSet:
    skipped: List[str] = []
    try:
        rows = _load_all(path, split, kind, data_cfg.toy)
    except MalformedLines as err:
        if data_cfg.on_bad_row != "skip":
            raise
        rows, skipped = _dataset_of(err.rows), err.reasons
    ids = list(range(len(rows)))
    if holdout is not None:
        train_ids, eval_ids = holdout_split(len(rows), data_cfg.eval_ratio)
        ids = train_ids if holdout == "train" else eval_ids
    if data_cfg.max_samples is not None:
        ids = ids[: data_cfg.max_samples]
    return RowSet(rows.select(ids), source_name(path, split, kind), ids, skipped)


def select_rows(data_cfg, split: str = "train", kind: str = "sft") -> Optional[RowSet]:
    """The rows of ``split`` (``train`` or ``eval``) of a ``DataConfig``, or None (no eval data).

    eval comes from, in order: ``eval_path`` (split ``eval_split``, else ``train`` — what
    ``datasets`` calls a lone file — or ``eval`` for ``toy``); for ``path: toy``, the toy
    task's own held-out prompts (``toy.eval_ratio``; ``data.eval_ratio`` is not used);
    ``path`` at ``eval_split``; ``eval_ratio`` of ``path``'s rows held out deterministically
    (train then excludes them); otherwise there is none.  ``max_samples`` caps each split
    after the hold-out, so the held-out rows do not depend on it.
    """
    if split not in ("train", "eval"):
        raise DataError(f"split must be 'train' or 'eval', got {split!r}")
    path, cfg = data_cfg.path, data_cfg
    holds_out = (
        path != TOY and cfg.eval_path is None and cfg.eval_split is None and cfg.eval_ratio > 0
    )
    if split == "train":
        return _row_set(path, cfg.split, kind, cfg, holdout="train" if holds_out else None)
    if cfg.eval_path is not None:
        default = "eval" if cfg.eval_path == TOY else "train"
        return _row_set(cfg.eval_path, cfg.eval_split or default, kind, cfg)
    if path == TOY:
        return _row_set(path, "eval", kind, cfg) if cfg.toy.eval_ratio > 0 else None
    if cfg.eval_split is not None:
        return _row_set(path, cfg.eval_split, kind, cfg)
    return _row_set(path, cfg.split, kind, cfg, holdout="eval") if holds_out else None

"""``Batch``: the one type that crosses process boundaries (driver <-> worker groups).

A Batch is a set of per-row fields sharing the leading dimension ``B`` plus a small ``meta``
dict:

* ``tensors`` -- ``{name: Tensor}``, every tensor ``(B, ...)``;
* ``extras``  -- ``{name: list}``, non-tensor per-row values (prompt strings, kinds), length B;
* ``meta``    -- JSON-able python values about the whole batch (``{"step": 3,
  "prompt_length": 17}``), copied (never split) by every operation.

Tensor and extras names share one namespace: ``batch["sequences"]``, ``batch["prompts"]``,
``"prompts" in batch`` and :meth:`Batch.keys` see both.  Every operation returns a new Batch;
tensors are shared (slices are views), never copied unless the operation needs it.

Row order is meaningful: PPO keeps the ``n_samples`` samples of one prompt in consecutive rows
(the critic-free estimators group them), so the splitting helpers keep it (:meth:`chunk` --
how a group call splits a Batch by data-parallel rank -- and :meth:`split`).

Transport: pickling (what Ray does between processes) always produces **CPU**, detached,
compact tensors -- a CUDA tensor is copied to the host and a view (e.g. a chunk) is copied so
only its own rows travel, not the whole storage it views.  The receiver calls ``.to(device)``.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch

Index = Union[torch.Tensor, Sequence[int]]


class BatchError(ValueError):
    """A malformed Batch or an operation on mismatched Batches; the message names the key."""


def _check_meta(meta: Mapping[str, Any]) -> Dict[str, Any]:
    for key, value in meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as err:
            raise BatchError(f"meta[{key!r}] is not JSON-able ({type(value).__name__}): {err}")
    return dict(meta)


class Batch:
    """Named per-row tensors (and lists) sharing the leading dimension B, plus ``meta``.

    ``Batch({"sequences": seq, "attention_mask": mask}, meta={"step": 3},
    extras={"prompts": [...]})``.  Construction validates that every tensor has ``dim >= 1``
    with ``shape[0] == B``, every extras list has length B, names are unique across tensors
    and extras, and ``meta`` is JSON-able.  A Batch with no field has ``B == 0``.
    """

    __slots__ = ("tensors", "extras", "meta", "_size")

    def __init__(
        self,
        tensors: Optional[Mapping[str, torch.Tensor]] = None,
        meta: Optional[Mapping[str, Any]] = None,
        extras: Optional[Mapping[str, Sequence[Any]]] = None,
    ):
        self.tensors: Dict[str, torch.Tensor] = dict(tensors or {})
        self.extras: Dict[str, List[Any]] = {k: _as_list(k, v) for k, v in (extras or {}).items()}
        self.meta: Dict[str, Any] = _check_meta(meta or {})
        self._size = self._validate()

    # ------------------------------------------------------------------ construction

    def _validate(self) -> int:
        first: Optional[Tuple[str, int]] = None
        for key, value in self.tensors.items():
            if not isinstance(value, torch.Tensor):
                raise BatchError(
                    f"tensor {key!r} is a {type(value).__name__}, not a torch.Tensor "
                    "(put per-row python values in extras)"
                )
            if value.dim() == 0:
                raise BatchError(
                    f"tensor {key!r} is 0-dim; per-row tensors need a leading "
                    "dimension B (put scalars in meta)"
                )
            first = self._same_size(first, key, value.shape[0], "tensor")
        for key, value in self.extras.items():
            if key in self.tensors:
                raise BatchError(f"key {key!r} is both a tensor and an extras list")
            first = self._same_size(first, key, len(value), "extras list")
        return first[1] if first else 0

    @staticmethod
    def _same_size(first, key: str, size: int, what: str):
        if first is None:
            return key, size
        if size != first[1]:
            raise BatchError(
                f"{what} {key!r} has leading size {size} but {first[0]!r} has "
                f"{first[1]}: every field of a Batch shares dimension 0"
            )
        return first

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None
    ) -> "Batch":
        """Tensors go to ``tensors``, lists/tuples to ``extras`` (e.g. a collator's output)."""
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        extras = {k: v for k, v in data.items() if not isinstance(v, torch.Tensor)}
        for key, value in extras.items():
            if not isinstance(value, (list, tuple)):
                raise BatchError(
                    f"field {key!r} is a {type(value).__name__}; expected a tensor "
                    "or a per-row list"
                )
        return cls(tensors, meta, extras)

    def _new(
        self,
        tensors: Mapping[str, torch.Tensor],
        extras: Mapping[str, Sequence[Any]],
        meta: Optional[Mapping[str, Any]] = None,
    ) -> "Batch":
        return Batch(tensors, copy.deepcopy(self.meta if meta is None else meta), extras)

    # ------------------------------------------------------------------ mapping interface

    def __len__(self) -> int:
        return self._size

    def keys(self) -> List[str]:
        """Tensor names, then extras names."""
        return list(self.tensors) + list(self.extras)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.tensors or key in self.extras

    def __getitem__(self, key):
        """``batch["name"]`` -> the tensor (or extras list); ``batch[2:5]`` -> a Batch of
        those rows (views); ``batch[[3, 0]]`` / ``batch[index_tensor]`` -> :meth:`index_select`."""
        if isinstance(key, str):
            if key in self.tensors:
                return self.tensors[key]
            if key in self.extras:
                return self.extras[key]
            raise KeyError(f"Batch has no key {key!r}; keys: {self.keys()}")
        if isinstance(key, slice):
            return self._new(
                {k: v[key] for k, v in self.tensors.items()},
                {k: v[key] for k, v in self.extras.items()},
            )
        if isinstance(key, int):
            raise TypeError(f"Batch[{key}]: use batch[[{key}]] for a one-row Batch")
        return self.index_select(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __repr__(self) -> str:
        fields = [
            f"{k}: {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
            for k, v in self.tensors.items()
        ]
        fields += [f"{k}: list[{len(v)}]" for k, v in self.extras.items()]
        return f"Batch(B={len(self)}, {{{', '.join(fields)}}}, meta={self.meta})"

    # ------------------------------------------------------------------ new batches

    def with_(self, **fields: Any) -> "Batch":
        """A new Batch with ``fields`` added or replaced (tensors, or lists for extras)."""
        tensors, extras = dict(self.tensors), dict(self.extras)
        for key, value in fields.items():
            tensors.pop(key, None)
            extras.pop(key, None)
            (tensors if isinstance(value, torch.Tensor) else extras)[key] = value
        return self._new(tensors, extras)

    update = with_  # same thing; returns a new Batch, ``self`` is unchanged

    def with_meta(self, **meta: Any) -> "Batch":
        """A new Batch whose meta is ``self.meta`` updated with ``meta``."""
        return self._new(self.tensors, self.extras, {**copy.deepcopy(self.meta), **meta})

    def select(self, keys: Sequence[str]) -> "Batch":
        """Only ``keys`` (tensors and/or extras), in that order; meta kept."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in keys if k not in self]
        if missing:
            raise KeyError(f"Batch.select: no key(s) {missing}; keys: {self.keys()}")
        return self._new(
            {k: self.tensors[k] for k in keys if k in self.tensors},
            {k: self.extras[k] for k in keys if k in self.extras},
        )

    def drop(self, keys: Sequence[str]) -> "Batch":
        """All keys except ``keys`` (unknown names are ignored)."""
        keys = {keys} if isinstance(keys, str) else set(keys)
        return self._new(
            {k: v for k, v in self.tensors.items() if k not in keys},
            {k: v for k, v in self.extras.items() if k not in keys},
        )

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "Batch":
        """Tensors moved to ``device`` (no copy when already there); extras and meta kept."""
        return self._new(
            {k: v.to(device, non_blocking=non_blocking) for k, v in self.tensors.items()},
            self.extras,
        )

    def index_select(self, index: Index) -> "Batch":
        """Rows ``index`` (list of ints, 1-D integer tensor, or a (B,) bool mask; negative ints
        count from the end), in that order; repeats allowed.  Tensors are copied (gathered)."""
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise IndexError(
                    f"Batch: bool index of shape {tuple(idx.shape)} needs ({len(self)},)"
                )
            idx = idx.nonzero().flatten()
        idx = idx.to(torch.long).reshape(-1)
        if idx.numel() and not bool(((idx >= -len(self)) & (idx < len(self))).all()):
            bad = idx[(idx < -len(self)) | (idx >= len(self))].tolist()
            raise IndexError(f"Batch.index_select: indices {bad} out of range for B={len(self)}")
        idx = torch.where(idx < 0, idx + len(self), idx)
        rows = idx.tolist()
        return self._new(
            {k: v.index_select(0, idx.to(v.device)) for k, v in self.tensors.items()},
            {k: [v[i] for i in rows] for k, v in self.extras.items()},
        )

    def repeat_interleave(self, repeats: int) -> "Batch":
        """Every row repeated ``repeats`` times consecutively (rows 0,0,1,1,… for 2)."""
        if repeats < 1:
            raise BatchError(f"repeat_interleave: repeats must be >= 1, got {repeats}")
        return self.index_select(torch.arange(len(self)).repeat_interleave(repeats))

    # ------------------------------------------------------------------ splitting

    def chunk(self, n: int) -> List["Batch"]:
        """``n`` parts in order, sizes differing by at most 1 (larger parts first)."""
        if not 1 <= n <= len(self):
            raise BatchError(
                f"Batch.chunk: cannot split B={len(self)} rows into n={n} "
                "non-empty parts (need 1 <= n <= B)"
            )
        base, extra = divmod(len(self), n)
        sizes = [base + (i < extra) for i in range(n)]
        return self._slices(sizes)

    def split(self, size: int) -> List["Batch"]:
        """Consecutive parts of ``size`` rows; the last one may be smaller."""
        if size < 1:
            raise BatchError(f"Batch.split: size must be >= 1, got {size}")
        sizes = [min(size, len(self) - s) for s in range(0, len(self), size)]
        return self._slices(sizes)

    def _slices(self, sizes: Sequence[int]) -> List["Batch"]:
        out, start = [], 0
        for size in sizes:
            out.append(self[start : start + size])
            start += size
        return out

    # ------------------------------------------------------------------ joining

    @staticmethod
    def concat(batches: Sequence["Batch"]) -> "Batch":
        """Rows of ``batches`` one after the other; meta from the first.

        Strict: every batch has the same tensor and extras keys, and each tensor the same
        dtype and the same shape except dim 0.  For results whose sequence length differs use
        :func:`pad_and_concat`.
        """
        batches = list(batches)
        if not batches:
            raise BatchError("Batch.concat: got an empty list")
        first = batches[0]
        for i, other in enumerate(batches[1:], start=1):
            _check_same_keys(first, other, i)
            for key, value in other.tensors.items():
                ref = first.tensors[key]
                if value.shape[1:] != ref.shape[1:] or value.dtype != ref.dtype:
                    raise BatchError(
                        f"Batch.concat: tensor {key!r} of batch {i} is {tuple(value.shape)} "
                        f"{value.dtype}, batch 0 has {tuple(ref.shape)} {ref.dtype} (all but "
                        "dim 0 must match; use pad_and_concat for ragged lengths)"
                    )
        tensors = {k: torch.cat([b.tensors[k] for b in batches]) for k in first.tensors}
        extras = {k: [x for b in batches for x in b.extras[k]] for k in first.extras}
        return first._new(tensors, extras)

    # ------------------------------------------------------------------ transport

    def __getstate__(self):
        return {
            "tensors": {k: _compact_cpu(v) for k, v in self.tensors.items()},
            "extras": self.extras,
            "meta": self.meta,
        }

    def __setstate__(self, state):
        self.tensors, self.extras, self.meta = state["tensors"], state["extras"], state["meta"]
        self._size = self._validate()


def _as_list(key: str, value: Any) -> List[Any]:
    if not isinstance(value, (list, tuple)):
        raise BatchError(
            f"extras {key!r} is a {type(value).__name__}; extras hold per-row "
            "lists (tensors go in tensors, batch-level values in meta)"
        )
    return list(value)


def _check_same_keys(first: Batch, other: Batch, i: int) -> None:
    for what, a, b in (
        ("tensor", first.tensors, other.tensors),
        ("extras", first.extras, other.extras),
    ):
        if set(a) != set(b):
            raise BatchError(
                f"Batch.concat: batch {i} has {what} keys {sorted(b)} but batch 0 "
                f"has {sorted(a)} (missing {sorted(set(a) - set(b))}, extra "
                f"{sorted(set(b) - set(a))})"
            )


def _compact_cpu(t: torch.Tensor) -> torch.Tensor:
    """Detached CPU tensor owning exactly its elements (so pickling sends only its rows)."""
    t = t.detach().to("cpu")
    whole = t.untyped_storage().nbytes() == t.numel() * t.element_size()
    if t.is_contiguous() and t.storage_offset() == 0 and whole:
        return t
    return t.clone(memory_format=torch.contiguous_format)


def pad_tensor(
    t: torch.Tensor, length: int, value: Union[int, float], side: str = "right", dim: int = 1
) -> torch.Tensor:
    """``t`` padded with ``value`` along ``dim`` to ``length`` on ``side`` (``left``/``right``)."""
    if side not in ("left", "right"):
        raise BatchError(f"pad side must be 'left' or 'right', got {side!r}")
    missing = length - t.shape[dim]
    if missing < 0:
        raise BatchError(f"cannot pad dim {dim} of size {t.shape[dim]} down to {length}")
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    fill = torch.full(shape, value, dtype=t.dtype, device=t.device)
    return torch.cat([fill, t] if side == "left" else [t, fill], dim=dim)


def pad_and_concat(
    batches: Sequence[Batch],
    pad_values: Optional[Mapping[str, Any]] = None,
    side: Optional[Mapping[str, str]] = None,
) -> Batch:
    """:meth:`Batch.concat` after padding dim 1 of every tensor with ``dim >= 2`` to the
    longest among ``batches`` (e.g. per-rank generation results of different lengths).

    ``pad_values[key]`` (default 0) fills the new positions, on ``side[key]`` (default
    ``"right"``).  Dims beyond 1 must still match.  Meta from the first batch.
    """
    batches = list(batches)
    if not batches:
        raise BatchError("pad_and_concat: got an empty list")
    pad_values, side = dict(pad_values or {}), dict(side or {})
    unknown = sorted((set(pad_values) | set(side)) - set(batches[0].tensors))
    if unknown:
        raise BatchError(
            f"pad_and_concat: pad_values/side name unknown tensor(s) {unknown}; "
            f"tensors: {list(batches[0].tensors)}"
        )
    for i, other in enumerate(batches[1:], start=1):
        _check_same_keys(batches[0], other, i)
    padded = []
    for batch in batches:
        tensors = {}
        for key, value in batch.tensors.items():
            if value.dim() >= 2:
                length = max(b.tensors[key].shape[1] for b in batches)
                value = pad_tensor(value, length, pad_values.get(key, 0), side.get(key, "right"))
            tensors[key] = value
        padded.append(Batch(tensors, batch.meta, batch.extras))
    return Batch.concat(padded)

"""The weight sync's wire format, free of Ray, vLLM and torch.distributed: how the actor's
parameters are grouped into buckets, packed into one byte buffer per bucket and read back, the
checksums that prove an engine got them, and the check of what each engine reports.

A *spec* is ``(name, dtype name, full shape)`` of one parameter, in the order the actor sends
them (:meth:`~rlhf_dist.engine.engine.ModelEngine.full_parameters`).  :func:`plan_buckets` cuts
the specs into consecutive buckets of at most ``bucket_bytes`` each; a bucket holds whole
parameters and a parameter larger than a bucket is a bucket of its own; ``bucket_bytes`` 0 is
one parameter per bucket (the stream of one collective per parameter).  Both ends compute the
plan from the same specs and size, so only the bytes travel.

A bucket is one ``uint8`` buffer: each tensor's bytes at an offset aligned to :data:`ALIGN`
(so that every slice can be viewed as its dtype).  :func:`pack` fills one, :func:`unpack` gives
views of it.  The checksum of a tensor (:func:`tensor_crc`) is the CRC32 of its raw bytes in
the engines' dtype, the same number on either side for the same bits.
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING, List, NamedTuple, Optional, Sequence, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import torch

WeightSpec = Tuple[str, str, List[int]]  # parameter name, dtype name, full shape
ALIGN = 64  # bytes: each tensor's offset in a bucket is a multiple (any dtype's size divides it)
MB = 2**20
MISSING = -1  # the checksum an engine reports for a parameter it did not load
# buckets on the wire at once: the sender packs the next while these travel, the receiver has
# their receives posted while vLLM loads the one before (memory: this many buffers a side)
IN_FLIGHT = 2


class Bucket(NamedTuple):
    """Consecutive specs sent as one buffer: ``offsets[i]`` is where ``specs[i]``'s bytes
    start, ``nbytes`` the buffer's length."""

    specs: Tuple[WeightSpec, ...]
    offsets: Tuple[int, ...]
    nbytes: int


class SyncReport(NamedTuple):
    """What one engine worker answers after a sync: the weights version it now holds and, on
    a checked sync, the CRC32 of every parameter it loaded (:data:`MISSING` for one it did
    not) and the actor's, both in spec order; None on other syncs."""

    version: int
    checksums: Optional[List[int]] = None
    expected: Optional[List[int]] = None


def bucket_bytes(mb: float) -> int:
    """``rollout.sync_bucket_mb`` in bytes (0: one parameter per bucket)."""
    return max(0, int(mb * MB))


def spec_nbytes(spec: WeightSpec) -> int:
    import torch

    _, dtype, shape = spec
    return math.prod(shape) * getattr(torch, dtype).itemsize


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def plan_buckets(specs: Sequence[WeightSpec], bucket_bytes: int) -> List[Bucket]:
    """``specs`` in order, cut into buckets of at most ``bucket_bytes`` (aligned offsets
    included); a parameter that does not fit in an empty bucket gets one of its own;
    ``bucket_bytes`` ≤ 0: one bucket per parameter."""
    buckets: List[Bucket] = []
    group: List[WeightSpec] = []
    offsets: List[int] = []
    end = 0

    def close() -> None:
        if group:
            buckets.append(Bucket(tuple(group), tuple(offsets), end))

    for spec in specs:
        size = spec_nbytes(spec)
        start = _aligned(end)
        if group and (bucket_bytes <= 0 or start + size > bucket_bytes):
            close()
            group, offsets, start = [], [], 0
        group.append(spec)
        offsets.append(start)
        end = start + size
    close()
    return buckets


def total_bytes(plan: Sequence[Bucket]) -> int:
    return sum(bucket.nbytes for bucket in plan)


def _view(buffer: "torch.Tensor", offset: int, spec: WeightSpec) -> "torch.Tensor":
    import torch

    _, dtype, shape = spec
    return buffer[offset : offset + spec_nbytes(spec)].view(getattr(torch, dtype)).view(shape)


def pack(
    bucket: Bucket, tensors: Sequence[Tuple[str, "torch.Tensor"]], device: "torch.device"
) -> "torch.Tensor":
    """One ``uint8`` buffer on ``device`` holding ``tensors`` (``(name, full tensor)`` in the
    bucket's order), each converted to its spec's dtype; the names and shapes must be the
    bucket's."""
    import torch

    if [name for name, _ in tensors] != [spec[0] for spec in bucket.specs]:
        raise ValueError(
            f"weight sync: the actor's parameters {[n for n, _ in tensors]} are "
            f"not the bucket's {[spec[0] for spec in bucket.specs]}"
        )
    buffer = torch.empty(bucket.nbytes, dtype=torch.uint8, device=device)
    for (name, tensor), spec, offset in zip(tensors, bucket.specs, bucket.offsets):
        if list(tensor.shape) != list(spec[2]):
            raise ValueError(
                f"weight sync: {name} has shape {list(tensor.shape)}, its spec {spec[2]}"
            )
        _view(buffer, offset, spec).copy_(tensor)
    return buffer


def unpack(buffer: "torch.Tensor", bucket: Bucket) -> List[Tuple[str, "torch.Tensor"]]:
    """``(name, tensor)`` of every spec of ``bucket``: views of ``buffer`` (no copy)."""
    return [
        (spec[0], _view(buffer, offset, spec)) for spec, offset in zip(bucket.specs, bucket.offsets)
    ]


def tensor_crc(tensor: "torch.Tensor") -> int:
    """CRC32 of the raw bytes of ``tensor`` (copied to the CPU if it is elsewhere)."""
    import torch

    raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu()
    return zlib.crc32(raw.numpy())


def sync_problem(
    report: SyncReport, specs: Sequence[WeightSpec], version: int, engine: str
) -> Optional[str]:
    """What is wrong with ``engine``'s report on the sync of ``version`` (None: nothing): a
    version other than the one sent, or (a checked sync) a parameter whose checksum is not
    the actor's -- the first one in sending order is named."""
    if report.version != version:
        return (
            f"{engine} holds weights version {report.version} after the sync of version {version}"
        )
    if report.expected is None and report.checksums is None:
        return None
    if (
        report.expected is None
        or report.checksums is None
        or not len(report.expected) == len(report.checksums) == len(specs)
    ):
        return (
            f"{engine}: checked sync of version {version} came back with "
            f"{_count(report.checksums)} engine and {_count(report.expected)} actor "
            f"checksums for {len(specs)} parameters"
        )
    wrong = [
        i for i, (got, want) in enumerate(zip(report.checksums, report.expected)) if got != want
    ]
    if not wrong:
        return None
    first = wrong[0]
    got = report.checksums[first]
    held = "not loaded" if got == MISSING else f"CRC32 {got:08x}"
    return (
        f"{engine}: weights differ from the actor's after the sync of version {version}: "
        f"parameter {specs[first][0]} (actor CRC32 {report.expected[first]:08x}, engine "
        f"{held}) is the first of {len(wrong)} of {len(specs)} parameters that differ"
    )


def _count(values: Optional[Sequence[int]]) -> str:
    return "no" if values is None else str(len(values))


__all__ = [
    "ALIGN",
    "Bucket",
    "MISSING",
    "SyncReport",
    "WeightSpec",
    "bucket_bytes",
    "pack",
    "plan_buckets",
    "spec_nbytes",
    "sync_problem",
    "tensor_crc",
    "total_bytes",
    "unpack",
]

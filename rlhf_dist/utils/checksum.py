"""One checksum of model weights: CRC32 of the raw bytes of every tensor in name order."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Dict

if TYPE_CHECKING:  # pragma: no cover
    import torch


def state_checksum(state: Dict[str, "torch.Tensor"]) -> float:
    """CRC32 of the raw bytes of every tensor, in sorted-name order: changes with any bit of
    any weight, and equals the same CRC computed from a ``model.safetensors`` holding the
    same tensors (so a frozen model can be checked against the files it was loaded from)."""
    import torch

    crc = 0
    for name in sorted(state):
        raw = state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        crc = zlib.crc32(raw.numpy(), crc)
    return float(crc)

"""Small helpers shared by the ``rlhf_dist.algo`` modules (dtype policy, registry lookup).

Dtype policy of the whole package: every function computes in :func:`compute_dtype` of its
floating inputs -- float32 for float16/bfloat16 inputs, otherwise the input dtype (float32
stays float32, float64 stays float64) -- and returns its tensors in that dtype.  So bf16 in
gives float32 out; gradients still flow back into the bf16 inputs through the cast.
"""

from __future__ import annotations

from typing import Callable, Mapping, TypeVar

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)

F = TypeVar("F", bound=Callable)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Dtype used for the maths: float32 if any input is 16-bit, else the promoted float dtype."""
    dtype = torch.float32
    for t in tensors:
        if t.dtype.is_floating_point and t.dtype not in _LOW_PRECISION:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def to_compute(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cast floating tensors to their common :func:`compute_dtype` (no copy if already there)."""
    dtype = compute_dtype(*tensors)
    return tuple(t.to(dtype) for t in tensors)


def as_bool_mask(mask: torch.Tensor) -> torch.Tensor:
    """A 0/1 (any dtype) or bool mask as a bool tensor."""
    return mask if mask.dtype == torch.bool else mask != 0


def check_same_shape(**tensors: torch.Tensor) -> None:
    """Raise ValueError unless all given tensors have one shape (names appear in the message)."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}")


def lookup(registry: Mapping[str, F], name: str, what: str) -> F:
    """``registry[name]``, or ValueError naming ``name`` and listing the valid names."""
    try:
        return registry[name]
    except KeyError:
        valid = ", ".join(repr(k) for k in sorted(registry))
        raise ValueError(f"unknown {what} {name!r}; valid names: {valid}") from None

"""Reductions and whitening over the unmasked positions of a (B, T) tensor.

``mask`` is 0/1 (any dtype) or bool, broadcastable to ``x``.  Masked-out positions are
excluded with ``torch.where`` (not ``x * mask``), so NaN/inf at masked positions never leak
into a result.  Reductions are computed and returned in float32 for bf16/fp16 inputs (see
``_common`` for the package dtype policy).
"""

from __future__ import annotations

import torch

from ._common import as_bool_mask, to_compute


def _count(mask: torch.Tensor, x: torch.Tensor, dim) -> torch.Tensor:
    m = as_bool_mask(mask).expand_as(x)
    return m.sum() if dim is None else m.sum(dim=dim)


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over unmasked positions.

    x, mask: (B, T) (or any broadcastable shapes).  ``dim=None`` -> 0-dim tensor over every
    unmasked element; ``dim=d`` -> that dimension reduced.  Empty mask -> 0.
    """
    (x,) = to_compute(x)
    m = as_bool_mask(mask)
    kept = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over unmasked positions: sum(x·m) / sum(m).

    x, mask: (B, T).  ``dim=None`` -> 0-dim tensor; ``dim=1`` -> (B,) per-row means.
    A slice with no unmasked element gives 0 (the count is clamped to 1), never NaN, so a
    fully padded row contributes no gradient instead of poisoning the batch.
    """
    total = masked_sum(x, mask, dim)
    count = _count(mask, x, dim).clamp(min=1).to(total.dtype)
    return total / count


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over all unmasked positions (0-dim tensor).

    x, mask: (B, T).  ``unbiased=True`` applies Bessel's correction n / (n - 1).
    Raises ValueError if the mask is empty, or has a single element with ``unbiased=True``.
    """
    n = int(_count(mask, x, None))
    if n == 0:
        raise ValueError("masked_var: mask has no unmasked element")
    if unbiased and n == 1:
        raise ValueError("masked_var: unbiased variance needs at least 2 unmasked elements")
    mean = masked_mean(x, mask)
    (xc,) = to_compute(x)
    var = masked_sum((xc - mean) ** 2, mask) / n
    if unbiased:
        var = var * (n / (n - 1))
    return var


def masked_whiten(
    x: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    unbiased: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) with mean/var over unmasked positions; (B, T) -> (B, T).

    ``shift_mean=False`` adds the mean back (rescale only).  Positions outside the mask are
    set to 0 in the output (so whitened advantages never push masked tokens).  Variance uses
    :func:`masked_var` with ``unbiased`` (default True, as most PPO codebases do).
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=unbiased)
    (xc,) = to_compute(x)
    out = (xc - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(as_bool_mask(mask), out, torch.zeros((), dtype=out.dtype, device=out.device))

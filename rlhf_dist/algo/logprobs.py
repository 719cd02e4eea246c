"""Token log-probabilities and entropies from logits, computed chunk by chunk.

A (B, T, V) ``log_softmax`` copy is the largest tensor in an RLHF step (V ~ 1e5), so these
functions never build one.  They walk the B*T rows in chunks (``chunk_size`` rows, default
sized so a float32 chunk holds about 2**25 elements ~ 128 MiB) and for each chunk compute
``logsumexp`` in float32.  Both are custom autograd functions whose backward also walks the
chunks, so the extra memory in forward *and* backward is one chunk, plus the (B, T, V)
gradient itself.  (Double backward is not supported.)

Slices are views of ``logits``: passing ``logits[:, :-1]`` costs no copy.

Dtype: float32 results for bf16/fp16 logits, float64 for float64 logits.
"""

from __future__ import annotations

from typing import Iterator

import torch

from ._common import as_bool_mask, compute_dtype

_CHUNK_ELEMENTS = 2**25


def _default_chunk_rows(vocab: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, vocab))


def _chunks(batch: int, time: int, rows: int) -> Iterator[tuple[slice, slice]]:
    """(batch slice, time slice) pairs covering (B, T) with at most ``rows`` rows each."""
    if rows >= time:
        per = max(1, rows // max(1, time))
        for b0 in range(0, batch, per):
            yield slice(b0, b0 + per), slice(0, time)
    else:
        for b in range(batch):
            for t0 in range(0, time, rows):
                yield slice(b, b + 1), slice(t0, t0 + rows)


def _check_chunk(chunk_size: int | None, vocab: int) -> int:
    if chunk_size is None:
        return _default_chunk_rows(vocab)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


class _LabelLogprob(torch.autograd.Function):
    """log p(label) = logit[label] - logsumexp(logits); grad = g * (onehot - softmax)."""

    @staticmethod
    def forward(ctx, logits, labels, rows):
        B, T, _ = logits.shape
        dtype = compute_dtype(logits)
        out = torch.empty(B, T, dtype=dtype, device=logits.device)
        lse = torch.empty(B, T, dtype=dtype, device=logits.device)
        for bs, ts in _chunks(B, T, rows):
            chunk = logits[bs, ts].to(dtype)
            lse[bs, ts] = torch.logsumexp(chunk, dim=-1)
            picked = chunk.gather(-1, labels[bs, ts].unsqueeze(-1)).squeeze(-1)
            out[bs, ts] = picked - lse[bs, ts]
        ctx.save_for_backward(logits, labels, lse)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, labels, lse = ctx.saved_tensors
        B, T, _ = logits.shape
        grad = torch.empty_like(logits)
        for bs, ts in _chunks(B, T, ctx.rows):
            g = grad_out[bs, ts].to(lse.dtype).unsqueeze(-1)
            probs = torch.exp(logits[bs, ts].to(lse.dtype) - lse[bs, ts].unsqueeze(-1))
            chunk_grad = -g * probs
            chunk_grad.scatter_add_(-1, labels[bs, ts].unsqueeze(-1), g)
            grad[bs, ts] = chunk_grad.to(grad.dtype)
        return grad, None, None


class _Entropy(torch.autograd.Function):
    """H = logsumexp(z) - sum(p z); dH/dz_j = -p_j (z_j - sum(p z))."""

    @staticmethod
    def forward(ctx, logits, rows):
        B, T, _ = logits.shape
        dtype = compute_dtype(logits)
        out = torch.empty(B, T, dtype=dtype, device=logits.device)
        lse = torch.empty(B, T, dtype=dtype, device=logits.device)
        for bs, ts in _chunks(B, T, rows):
            chunk = logits[bs, ts].to(dtype)
            lse[bs, ts] = torch.logsumexp(chunk, dim=-1)
            probs = torch.exp(chunk - lse[bs, ts].unsqueeze(-1))
            out[bs, ts] = lse[bs, ts] - (probs * chunk).sum(-1)
        ctx.save_for_backward(logits, lse)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, lse = ctx.saved_tensors
        B, T, _ = logits.shape
        grad = torch.empty_like(logits)
        for bs, ts in _chunks(B, T, ctx.rows):
            chunk = logits[bs, ts].to(lse.dtype)
            probs = torch.exp(chunk - lse[bs, ts].unsqueeze(-1))
            expected = (probs * chunk).sum(-1, keepdim=True)
            g = grad_out[bs, ts].to(lse.dtype).unsqueeze(-1)
            grad[bs, ts] = (-g * probs * (chunk - expected)).to(grad.dtype)
        return grad, None


def _check_logits(logits: torch.Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")


def logprobs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """log softmax(logits)[labels] per token, without a full log_softmax copy.

    logits: (B, T, V); labels: (B, T) int64 in [0, V) -- *no shift inside*: logits[b, t]
    scores labels[b, t] (the caller shifts; replace ignore indices such as -100 first).
    chunk_size: rows of B*T processed at once (None -> about 2**25 / V).
    Returns (B, T) in float32 (float64 for float64 logits).
    """
    _check_logits(logits)
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels {tuple(labels.shape)} must be logits.shape[:2] {tuple(logits.shape[:2])}"
        )
    rows = _check_chunk(chunk_size, logits.shape[-1])
    return _LabelLogprob.apply(logits, labels.long(), rows)


def entropy_from_logits(logits: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Entropy of softmax(logits) per token: (B, T, V) -> (B, T), chunked like
    :func:`logprobs_from_logits`; float32 for bf16/fp16/float32 logits."""
    _check_logits(logits)
    rows = _check_chunk(chunk_size, logits.shape[-1])
    return _Entropy.apply(logits, rows)


def token_logps(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned targets, *no shift*: logits[b, t] scores targets[b, t].

    logits: (B, T, V); targets: (B, T) with ``ignore_index`` where nothing is scored.
    Returns ``(logps, mask)``, each (B, T): token log-probs (0 at ignored positions) and the
    bool mask of scored tokens.
    """
    _check_logits(logits)
    mask = targets != ignore_index
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    logps = logprobs_from_logits(logits, safe, chunk_size=chunk_size)
    return torch.where(mask, logps, torch.zeros_like(logps)), mask


def scored_columns(*targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """1D indices of the columns where some row of some ``targets`` (each (B, T)) is scored:
    the positions whose logits a loss reads (the rest -- prompts, padding -- need no LM head;
    ``logits_to_keep`` of :func:`~rlhf_dist.models.causal_lm_logits`)."""
    scored = torch.stack([t != ignore_index for t in targets]).flatten(0, 1).any(0)
    return scored.nonzero().squeeze(-1)


def shifted_token_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal-LM (Hugging Face) shift: logits[:, :-1] predict labels[:, 1:].

    logits: (B, T, V); labels: (B, T) with ``ignore_index`` where no loss is wanted
    (prompt and padding).  Returns ``(logps, mask)``, each (B, T-1): token log-probs
    (0 at ignored positions) and the bool mask of scored tokens.
    """
    _check_logits(logits)
    return token_logps(logits[:, :-1], labels[:, 1:], ignore_index, chunk_size)


def masked_sequence_logps(
    logps: torch.Tensor, mask: torch.Tensor, average: bool = False
) -> torch.Tensor:
    """(B, T) token log-probs (0 where unscored) and their mask -> (B,) per-row sums, or
    means over the scored tokens with ``average`` (0 for a row with none)."""
    total = logps.sum(-1)
    if average:
        total = total / as_bool_mask(mask).sum(-1).clamp(min=1).to(total.dtype)
    return total


def sequence_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    average: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Per-sequence log-probability, e.g. for DPO: (B, T, V), (B, T) -> (B,).

    *Shift inside* (same as :func:`shifted_token_logps`): pass ``labels = input_ids`` with the
    prompt and padding set to ``ignore_index``.  ``average=False`` sums the token log-probs;
    ``average=True`` divides by the number of scored tokens (0 for a row with none).
    """
    return masked_sequence_logps(
        *shifted_token_logps(logits, labels, ignore_index, chunk_size), average=average
    )

"""Responses to prompt texts sampled in one process: the one sampling path of ``rlhf-dist
eval`` and ``rlhf-dist label``.

Prompts are tokenised like PPO prompts (:class:`~rlhf_dist.data.Encoder`: left-truncated to
``max_prompt_length``), left-padded in batches of ``batch_size`` prompts and sampled by a
backend's sampler (:func:`~rlhf_dist.rollout.backends.make_sampler`).  Batch ``b`` is sampled
with seed ``derive_seed(seed, b, SAMPLING)`` (:mod:`rlhf_dist.utils.seeding`), as a PPO run
seeds its prompt batches: a seed gives the same texts, and two models sampled with one seed
share their random numbers (HF backend).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

from rlhf_dist.data import Encoder, pad


def sample_texts(
    sampler: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int,
    max_prompt_length: int,
    seed: Optional[int] = 0,
    on_batch: Optional[Callable[[int], None]] = None,
) -> List[str]:
    """``len(prompts) · n`` decoded responses (n = the sampler's ``n_samples_per_prompt``; the
    n samples of prompt i at ``[i·n, (i+1)·n)``).  ``seed`` None samples unseeded;
    ``on_batch(prompts_done)`` is called after each batch (progress bars)."""
    from rlhf_dist.rollout.generate import decode_responses
    from rlhf_dist.utils.seeding import SAMPLING, derive_seed

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoder = Encoder(tokenizer, max_prompt_length + 1, max_prompt_length)
    out: List[str] = []
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        ids = [encoder.prompt(p) for p in prompts[start : start + batch_size]]
        batch = sampler.generate(
            pad(ids, sampler.pad_token_id, "left"),
            pad([[1] * len(i) for i in ids], 0, "left"),
            None if seed is None else derive_seed(seed, b, SAMPLING),
        )
        out += decode_responses(batch, tokenizer)
        if on_batch is not None:
            on_batch(len(ids))
    return out


def sample_with_backend(
    backend: str,
    tokenizer: Any,
    prompts: Sequence[str],
    rollout: Any,
    batch_size: int,
    max_prompt_length: int,
    seed: Optional[int] = 0,
    *,
    model: Any = None,
    model_dir: Optional[str] = None,
    engines: Any = None,
    dtype: Optional[str] = None,
    on_batch: Optional[Callable[[int], None]] = None,
) -> List[str]:
    """:func:`sample_texts` with a sampler of ``backend`` built for the call
    (:func:`~rlhf_dist.rollout.backends.make_sampler`: ``model`` for ``hf``, ``model_dir``,
    ``engines`` and ``dtype`` for ``vllm``; ``rollout`` the sampling settings, its
    ``n_samples_per_prompt`` the n) and closed after it."""
    from rlhf_dist.rollout.backends import make_sampler

    sampler = make_sampler(
        backend,
        model_dir=model_dir,
        model=model,
        tokenizer=tokenizer,
        rollout=rollout,
        seed=seed or 0,
        engines=engines,
        dtype=dtype,
        max_model_len=max_prompt_length + rollout.max_new_tokens,
    )
    try:
        return sample_texts(
            sampler, tokenizer, prompts, batch_size, max_prompt_length, seed, on_batch
        )
    finally:
        sampler.close()

"""Rollouts with Hugging Face ``generate`` and the log-probs of the generated tokens.

Tensor alignment (the convention of every rollout / scoring / learning tensor):

* ``sequences`` ``(N, T)``: columns ``[0, P)`` are the LEFT-padded prompt (``P`` =
  ``meta["prompt_length"]``), columns ``[P, T)`` the RIGHT-padded response; ``N = B · n``
  with the ``n`` samples of a prompt in consecutive rows.
* ``attention_mask`` ``(N, T)``: 1 on real prompt tokens and on response tokens up to and
  including the first EOS; 0 on padding and on anything after the first EOS.
* ``action_mask`` ``(N, T−1)``: "action" column ``t`` is the token ``sequences[:, t+1]``,
  predicted by the logits at position ``t``.  ``action_mask[:, t] = 1`` iff ``t+1`` is a
  response token up to and including the first EOS (so ``action_mask[:, :P-1]`` is 0).
* Every per-action tensor -- ``old_logprobs``, ``ref_logprobs``, ``values``,
  ``token_rewards``, ``advantages``, ``returns`` -- is ``(N, T−1)`` on that same grid and 0
  where ``action_mask`` is 0.  (A critic's value at column ``t`` is V(state = tokens ``≤ t``),
  i.e. the value head read at position ``t``, the state in which action ``t`` is taken.)
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Sequence, Union

import torch

from rlhf_dist.algo import logprobs_from_logits
from rlhf_dist.protocol import Batch, BatchError, pad_and_concat, pad_tensor


def _eos_list(eos: Union[int, Sequence[int], None]) -> List[int]:
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(e) for e in eos]


def stop_ids(
    rollout: Any, tokenizer: Any, eos_token_id: Union[int, Sequence[int], None] = None
) -> List[int]:
    """The ids that end a response: ``eos_token_id`` (default: the tokenizer's) followed by
    ``rollout.stop_token_ids`` -- the same list for every rollout backend."""
    eos = _eos_list(eos_token_id if eos_token_id is not None else tokenizer.eos_token_id)
    return eos + [int(i) for i in getattr(rollout, "stop_token_ids", ()) if int(i) not in eos]


def response_mask(responses: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """``(N, R)`` long mask: 1 on response tokens up to and including the first EOS.

    Position-based, so a sampled token that happens to equal the pad id is still an action.
    """
    is_eos = torch.isin(responses, torch.tensor(list(eos_token_ids), device=responses.device))
    after_first_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return (~after_first_eos).long()


def _check_prompts(ids: torch.Tensor, mask: torch.Tensor) -> None:
    if ids.dim() != 2 or ids.shape != mask.shape:
        raise ValueError(
            f"prompt_input_ids {tuple(ids.shape)} and prompt_attention_mask "
            f"{tuple(mask.shape)} must both be (B, P)"
        )
    m = mask.long()
    empty = (m.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"prompt rows {empty} have no real token")
    not_left = (m[:, 1:] < m[:, :-1]).any(-1).nonzero().flatten().tolist()
    if not_left:
        raise ValueError(
            f"prompt rows {not_left} are not left-padded (generation continues "
            "from the last column, so padding must come first)"
        )


@contextmanager
def _seeded(seed: Optional[int], device: torch.device) -> Iterator[None]:
    """Seed torch's global RNGs inside a forked RNG state (``generate`` takes no Generator)."""
    if seed is None:
        yield
        return
    devices = [] if device.type == "cpu" else [device.index or 0]
    kwargs = {} if device.type == "cpu" else {"device_type": device.type}
    with torch.random.fork_rng(devices=devices, **kwargs):
        torch.manual_seed(seed)
        yield


@contextmanager
def _generation_mode(model: Any) -> Iterator[None]:
    """Eval mode, and the model's own ``generation_config`` hidden for the call.

    The rollout config is the whole sampling distribution: a checkpoint's
    ``generation_config.json`` (repetition penalty, min_p, suppressed tokens, …) must not
    silently change the behaviour policy, so HF ``generate`` sees a blank default instead.
    Both are restored afterwards.
    """
    from transformers import GenerationConfig

    was_training = model.training
    saved = getattr(model, "generation_config", None)
    model.eval()
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved
        model.train(was_training)


class _SampledLogprobs:
    """A forward hook on the causal LM that ``generate`` runs: each forward's input ends with
    the token the previous forward's last logits sampled, so its log-prob (at
    ``temperature``, of the raw logits -- before min-new-tokens / top-p / top-k, like
    :func:`~rlhf_dist.models.action_logprobs`) is read there; one ``(N, V)`` logits buffer is
    held."""

    def __init__(self, temperature: float):
        self.temperature, self.last, self.columns = temperature, None, []

    def _logprob(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.last if self.temperature == 1.0 else self.last / self.temperature
        return logprobs_from_logits(logits[:, None], tokens[:, None])[:, 0]

    def __call__(self, module, args, kwargs, output) -> None:
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        if self.last is not None:
            self.columns.append(self._logprob(ids[:, -1]))
        self.last = output.logits[:, -1]

    def response_logprobs(self, responses: torch.Tensor) -> torch.Tensor:
        """``(N, R)`` log-probs of the sampled ``responses`` (the last token scored by the
        logits of the final forward)."""
        if self.last is None or len(self.columns) != responses.shape[1] - 1:
            raise RuntimeError(
                f"generate ran {len(self.columns) + (self.last is not None)} "
                f"forwards for {responses.shape[1]} new tokens: the log-probs "
                "cannot be read from them (rollout.logprobs_from_generate=false "
                "recomputes them)"
            )
        return torch.stack([*self.columns, self._logprob(responses[:, -1])], dim=1)


@contextmanager
def _reading_logprobs(model: Any, temperature: float) -> Iterator[_SampledLogprobs]:
    """:class:`_SampledLogprobs` hooked on the module whose forward ``generate`` calls (a
    peft model's base model)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    hook = _SampledLogprobs(temperature)
    handle = inner.register_forward_hook(hook, with_kwargs=True)
    try:
        yield hook
    finally:
        handle.remove()


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def sampling_temperature(rollout: Any) -> float:
    """Temperature of the sampling distribution (1.0 when greedy): pass it to
    :func:`~rlhf_dist.models.action_logprobs` for the actor, the reference and the learner
    alike."""
    return float(rollout.temperature) if rollout.do_sample else 1.0


class HFGenerator:
    """Samples responses from a Hugging Face causal LM with the settings of ``RolloutConfig``.

    ``model`` must hold full (gathered) parameters for the call: under ZeRO-3 the actor worker
    wraps :meth:`generate` in ``engine.gathered()``.  ``eos_token_id`` / ``pad_token_id``
    default to the tokenizer's (``eos_token_id`` may be a list of stop ids; pad falls back to
    the first EOS).  The backend is HF generate with a KV cache; a vLLM backend would return
    the same :class:`~rlhf_dist.protocol.Batch`.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        rollout: Any,
        eos_token_id: Union[int, Sequence[int], None] = None,
        pad_token_id: Optional[int] = None,
    ):
        self.model, self.tokenizer, self.rollout = model, tokenizer, rollout
        self.eos_token_ids = stop_ids(rollout, tokenizer, eos_token_id)
        if not self.eos_token_ids:
            raise ValueError("HFGenerator: the tokenizer has no eos_token_id and none was given")
        pad = pad_token_id if pad_token_id is not None else tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else self.eos_token_ids[0])

    @property
    def temperature(self) -> float:
        return sampling_temperature(self.rollout)

    def generation_config(self):
        """The ``transformers.GenerationConfig`` used for every call."""
        from transformers import GenerationConfig

        r = self.rollout
        sampling = (
            dict(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k) if r.do_sample else {}
        )  # top_k=0 disables HF's top-k (its default is 50)
        eos = self.eos_token_ids
        return GenerationConfig(
            do_sample=r.do_sample,
            max_new_tokens=r.max_new_tokens,
            min_new_tokens=r.min_new_tokens or None,
            num_beams=1,
            num_return_sequences=1,
            use_cache=True,
            pad_token_id=self.pad_token_id,
            eos_token_id=eos[0] if len(eos) == 1 else eos,
            bos_token_id=getattr(self.tokenizer, "bos_token_id", None),
            **sampling,
        )

    @torch.no_grad()
    def generate(
        self,
        prompt_input_ids: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        generator_seed: Optional[int] = None,
        with_logprobs: bool = False,
        n: Optional[int] = None,
    ) -> Batch:
        """Sample ``n`` (default ``n_samples_per_prompt``) responses per (left-padded) prompt.

        prompt_input_ids, prompt_attention_mask: ``(B, P)``, left-padded.  Returns a Batch
        of ``N = B · n`` rows (samples of a prompt consecutive) with ``sequences``,
        ``attention_mask`` ``(N, T)`` and ``action_mask`` ``(N, T−1)`` (see the module doc),
        on the model's device, and meta ``prompt_length`` (= P), ``n_samples_per_prompt``.
        ``generator_seed`` makes sampling reproducible without touching the global RNG state
        (give each data-parallel rank its own seed).  ``with_logprobs=True`` adds
        ``old_logprobs`` ``(N, T−1)`` at :attr:`temperature`, read from generate's own
        (KV-cached) forwards: :func:`~rlhf_dist.models.action_logprobs` of the same model up to
        float rounding, without one more forward.
        """
        _check_prompts(prompt_input_ids, prompt_attention_mask)
        n = self.rollout.n_samples_per_prompt if n is None else n
        device = _model_device(self.model)
        ids = prompt_input_ids.repeat_interleave(n, dim=0).to(device)
        prompt_mask = prompt_attention_mask.repeat_interleave(n, dim=0).to(device).long()
        reading = (
            _reading_logprobs(self.model, self.temperature)
            if with_logprobs
            else contextlib.nullcontext()
        )
        with _seeded(generator_seed, device), _generation_mode(self.model), reading as hook:
            # the parameters are whole here, so no rank waits for another: without
            # synced_gpus=False HF (under ZeRO-3, world > 1) all-reduces a flag every token
            # and runs dummy forwards on a rank whose rows have all finished
            sequences = self.model.generate(
                input_ids=ids,
                attention_mask=prompt_mask,
                generation_config=self.generation_config(),
                synced_gpus=False,
            )
        batch = rollout_batch(sequences, prompt_mask, self.eos_token_ids, self.pad_token_id, n)
        if not with_logprobs:
            return batch
        P = ids.shape[1]
        response = hook.response_logprobs(sequences[:, P:])
        logps = torch.cat([response.new_zeros(len(batch), P - 1), response], dim=1)
        return batch.with_(
            old_logprobs=torch.where(batch["action_mask"].bool(), logps, torch.zeros_like(logps))
        )


def rollout_batch(
    sequences: torch.Tensor,
    prompt_mask: torch.Tensor,
    eos_token_ids: Sequence[int],
    pad_token_id: int,
    n_samples: int,
) -> Batch:
    """The rollout :class:`Batch` of ``sequences`` ``(N, P + R)`` (left-padded prompts of
    mask ``prompt_mask`` ``(N, P)``, then responses): masks from the first stop id on,
    everything after it set to ``pad_token_id`` (see the module doc).  Every backend
    returns its samples through here, so the layouts cannot drift apart."""
    P = prompt_mask.shape[1]
    resp_mask = response_mask(sequences[:, P:], eos_token_ids)
    sequences = sequences.clone()
    sequences[:, P:] = sequences[:, P:].masked_fill(resp_mask == 0, pad_token_id)
    before = torch.zeros(sequences.shape[0], P - 1, dtype=torch.long, device=sequences.device)
    return Batch(
        {
            "sequences": sequences,
            "attention_mask": torch.cat([prompt_mask.long(), resp_mask], dim=1),
            "action_mask": torch.cat([before, resp_mask], dim=1),
        },
        meta={"prompt_length": P, "n_samples_per_prompt": n_samples},
    )


def response_token_ids(batch: Batch) -> List[List[int]]:
    """Per row, the generated token ids under ``action_mask`` (first EOS included)."""
    seq, mask = batch["sequences"][:, 1:].cpu(), batch["action_mask"].bool().cpu()
    return [seq[i][mask[i]].tolist() for i in range(len(batch))]


def truncated_rows(batch: Batch, stop_token_ids: Sequence[int]) -> torch.Tensor:
    """(N,) bool: the responses with no stop token, cut at ``rollout.max_new_tokens``."""
    stop = set(int(i) for i in stop_token_ids)
    return torch.tensor(
        [not stop.intersection(ids) for ids in response_token_ids(batch)], dtype=torch.bool
    )


def decode_responses(batch: Batch, tokenizer: Any, skip_special_tokens: bool = True) -> List[str]:
    """Response texts (EOS and other special tokens dropped unless asked): every token after
    the prompt under ``attention_mask`` -- a multi-turn trajectory's whole transcript, model
    turns and observations (a single response's tokens are its actions)."""
    P = batch.meta["prompt_length"]
    seq, mask = batch["sequences"][:, P:].cpu(), batch["attention_mask"][:, P:].bool().cpu()
    return tokenizer.batch_decode(
        [seq[i][mask[i]].tolist() for i in range(len(batch))],
        skip_special_tokens=skip_special_tokens,
    )


def decode_prompts(batch: Batch, tokenizer: Any, skip_special_tokens: bool = True) -> List[str]:
    """Prompt texts: the real tokens of the first ``meta["prompt_length"]`` columns."""
    P = batch.meta["prompt_length"]
    seq, mask = batch["sequences"][:, :P].cpu(), batch["attention_mask"][:, :P].bool().cpu()
    return tokenizer.batch_decode(
        [seq[i][mask[i]].tolist() for i in range(len(batch))],
        skip_special_tokens=skip_special_tokens,
    )


def concat_rollouts(batches: Sequence[Batch], pad_token_id: int) -> Batch:
    """Join generation results of several ranks whose prompt width ``P`` and/or response
    length differ: every sequence-aligned tensor (``dim >= 2``) is LEFT-padded so all prompt
    parts end at the common ``P = max P_i``, then right-padded to the longest row.
    ``sequences`` pads with ``pad_token_id``, everything else with 0.
    """
    batches = list(batches)
    if not batches:
        raise BatchError("concat_rollouts: got an empty list")
    P = max(b.meta["prompt_length"] for b in batches)
    aligned = []
    for b in batches:
        shift = P - b.meta["prompt_length"]
        tensors = {
            k: pad_tensor(v, v.shape[1] + shift, pad_token_id if k == "sequences" else 0, "left")
            if v.dim() >= 2
            else v
            for k, v in b.tensors.items()
        }
        aligned.append(Batch(tensors, {**b.meta, "prompt_length": P}, b.extras))
    return pad_and_concat(aligned, pad_values={"sequences": pad_token_id})


__all__ = [
    "HFGenerator",
    "concat_rollouts",
    "decode_prompts",
    "decode_responses",
    "response_mask",
    "response_token_ids",
    "rollout_batch",
    "stop_ids",
    "truncated_rows",
]

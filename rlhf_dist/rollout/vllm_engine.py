"""Rollouts with vLLM: the same :class:`~rlhf_dist.protocol.Batch` as the HF generator.

:class:`VLLMRolloutEngine` holds one ``vllm.LLM`` (its engine core in this process) and turns
``RolloutConfig`` into ``SamplingParams``: ``n_samples_per_prompt`` samples per prompt,
temperature / top-p / top-k, min and max new tokens, the stop ids of
:func:`~rlhf_dist.rollout.generate.stop_ids`, one seed per prompt.  Its results go through
:func:`~rlhf_dist.rollout.generate.rollout_batch`, so the layout (left-padded prompt,
right-padded response, masks up to the first stop id) is the HF generator's, plus
``engine_logprobs`` ``(N, T−1)``: vLLM's log-probs of the sampled tokens (after temperature;
they equal the actor's when the weights and the arithmetic agree).

What is checked before an engine is built (vLLM installed, the model servable, the PPO
engines' layout) is :mod:`rlhf_dist.rollout.vllm_preflight`.

New weights arrive through vLLM's worker extension (:mod:`rlhf_dist.rollout.vllm_receiver`):
:meth:`init_weight_group` joins a process group with the actor's rank 0, and
:meth:`receive_weights` takes the buckets it broadcasts into ``model_runner.reload_weights``
and reports, per worker, the version it now holds (and on a checked sync the checksums).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch

from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.generate import _check_prompts, rollout_batch
from rlhf_dist.rollout.vllm_preflight import require_vllm
from rlhf_dist.rollout.weight_buckets import SyncReport, WeightSpec

RECEIVER = "rlhf_dist.rollout.vllm_receiver.WeightReceiver"
SEED_STRIDE = 2**20  # rows one generate call may seed apart from the next call's


def sampling_params(rollout: Any, stop: Sequence[int], seed: Optional[int]):
    """``vllm.SamplingParams`` of one sampled row of ``rollout`` (greedy when ``do_sample`` is
    false): ``n=1``, so the row's seed is ``seed`` on every build of vLLM (how a request's
    ``n`` samples are seeded is the engine's own business and differs between model runners)."""
    from vllm import SamplingParams

    sampled = rollout.do_sample
    return SamplingParams(
        n=1,
        temperature=rollout.temperature if sampled else 0.0,
        top_p=rollout.top_p if sampled else 1.0,
        top_k=rollout.top_k if sampled and rollout.top_k > 0 else 0,
        max_tokens=rollout.max_new_tokens,
        min_tokens=rollout.min_new_tokens,
        stop_token_ids=list(stop),
        ignore_eos=False,
        seed=seed,
        logprobs=0,
        detokenize=False,
        skip_special_tokens=False,
    )


def _response(completion: Any) -> Tuple[List[int], List[float]]:
    """Token ids (vLLM keeps the stop id that ended a response) and their log-probs."""
    logps = [float(next(iter(step.values())).logprob) for step in completion.logprobs]
    return list(completion.token_ids), logps


def outputs_to_batch(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    outputs: Sequence[Any],
    stop: Sequence[int],
    pad_token_id: int,
    n: int,
) -> Batch:
    """vLLM's ``RequestOutput`` list (the ``n`` completions of each prompt in order, as ``n``
    completions of one output or one completion of each of ``n`` outputs) as the rollout
    Batch of :func:`rollout_batch`, with ``engine_logprobs`` on the action grid."""
    responses = [_response(c) for out in outputs for c in out.outputs]
    R = max(1, max(len(ids) for ids, _ in responses))
    N, P = len(responses), prompt_ids.shape[1]
    tokens = torch.full((N, R), pad_token_id, dtype=torch.long)
    logps = torch.zeros(N, P - 1 + R)
    for row, (ids, lp) in enumerate(responses):
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        logps[row, P - 1 : P - 1 + len(lp)] = torch.tensor(lp)
    ids = prompt_ids.repeat_interleave(n, dim=0)
    batch = rollout_batch(
        torch.cat([ids, tokens], dim=1),
        prompt_mask.repeat_interleave(n, dim=0),
        stop,
        pad_token_id,
        n,
    )
    return batch.with_(engine_logprobs=logps * batch["action_mask"])


@contextlib.contextmanager
def config_dir(config_json: str) -> Iterator[str]:
    """A private directory holding only ``config.json`` while an engine is built from it."""
    with tempfile.TemporaryDirectory(prefix="rlhf_dist_vllm_") as directory:
        (Path(directory) / "config.json").write_text(config_json)
        yield directory


# vLLM's own code touches an attribute torch 2.13 deprecates (once per engine process): not ours
# to change, hidden by its exact message
warnings.filterwarnings(
    "ignore", category=FutureWarning, message=r"`torch\.distributed\.reduce_op` is deprecated"
)


class _DropChatWarmup(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Chat template warmup failed"


@contextlib.contextmanager
def _quiet_chat_template_warmup():
    """vLLM warms its chat template up at every engine start and, with no tokenizer (token ids
    in, token ids out: we never use its chat rendering), logs the failure with a traceback."""
    quiet, target = _DropChatWarmup(), logging.getLogger("vllm.renderers.base")
    target.addFilter(quiet)
    try:
        yield
    finally:
        target.removeFilter(quiet)


class VLLMRolloutEngine:
    """One vLLM engine.  ``model`` is a directory: a full HF model (``load_format="auto"``,
    eval and labelling) or a config-only one whose weights come by :meth:`receive_weights`
    (``load_format="dummy"``, PPO)."""

    def __init__(
        self,
        model: str,
        rollout: Any,
        engines: Any,
        dtype: str,
        seed: int,
        stop: Sequence[int],
        pad_token_id: int,
        load_format: str = "auto",
        sleep_mode: bool = False,
    ):
        require_vllm()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine core in-process
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        memory = (
            {"gpu_memory_utilization": engines.gpu_memory_utilization}
            if on_gpu
            else {"kv_cache_memory_bytes": int(engines.kv_cache_gb * 2**30)}
        )
        self.rollout, self.stop, self.pad_token_id = rollout, list(stop), int(pad_token_id)
        tp = engines.tensor_parallel_size
        # in a Ray actor vLLM would pick its Ray executor and try to place tp more workers;
        # this actor already holds the tp devices: its own worker processes use them
        executor = {"distributed_executor_backend": "mp"} if tp > 1 else {}
        # On CPU a prompt is never prefilled in chunks: vLLM rewinds a seeded request's random
        # generator after a partial prefill step, which only CUDA generators can do ("CPU
        # Generator does not use offset" once a batch's prompts pass the step's token budget)
        chunking = (
            {}
            if on_gpu
            else {
                "enable_chunked_prefill": False,
                "max_num_batched_tokens": max(engines.max_model_len, 4096),
            }
        )
        with _quiet_chat_template_warmup():
            self.llm = LLM(
                model=model,
                skip_tokenizer_init=True,
                dtype=dtype,
                seed=seed,
                tensor_parallel_size=tp,
                **executor,
                max_model_len=engines.max_model_len,
                max_num_seqs=engines.max_num_seqs,
                enforce_eager=(
                    not on_gpu if engines.enforce_eager is None else engines.enforce_eager
                ),
                load_format=load_format,
                worker_extension_cls=RECEIVER,
                logprobs_mode="processed_logprobs",
                generation_config="vllm",
                enable_sleep_mode=sleep_mode,
                **memory,
                **chunking,
            )
        self.version: Optional[int] = None  # of the weights it holds (None: none synced)

    @torch.no_grad()
    def generate(
        self,
        prompt_input_ids: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        seed: Optional[int] = None,
        first_row: int = 0,
        n: Optional[int] = None,
    ) -> Batch:
        """Sample ``n`` (default ``n_samples_per_prompt``) responses per (left-padded) prompt:
        the HF generator's Batch plus ``engine_logprobs``.

        Row ``j`` (sample ``c`` of prompt ``i``, ``j = i·n + c``) is a request of its own
        (vLLM's prefix cache shares the prompt's KV between a prompt's rows) sampled with seed
        ``seed · SEED_STRIDE + first_row + j``: no two rows of a call, nor of calls with
        different seeds, share their random numbers, a row's draw does not depend on how the
        prompts were split over engines (``first_row``: the index of this part's first row in
        the whole call), nor on how a vLLM build seeds the samples of one request.
        """
        _check_prompts(prompt_input_ids, prompt_attention_mask)
        ids, mask = prompt_input_ids.cpu(), prompt_attention_mask.cpu().long()
        n = self.rollout.n_samples_per_prompt if n is None else n
        rows = [
            {"prompt_token_ids": row[m.bool()].tolist()}
            for row, m in zip(ids, mask)
            for _ in range(n)
        ]
        base = None if seed is None else seed * SEED_STRIDE + first_row
        params = [
            sampling_params(self.rollout, self.stop, None if base is None else base + j)
            for j in range(len(rows))
        ]
        outputs = self.llm.generate(rows, params, use_tqdm=False)
        return outputs_to_batch(ids, mask, outputs, self.stop, self.pad_token_id, n)

    # ------------------------------------------------------------------ weights
    def init_weight_group(
        self,
        host: str,
        port: int,
        rank_offset: int,
        world_size: int,
        backend: str,
        timeout_s: float,
        local_host: Optional[str] = None,
    ) -> None:
        """Join the actor's weight group (its store at ``host:port``); gloo binds
        ``local_host``, this engine's node address."""
        self.llm.collective_rpc(
            "init_weight_group",
            args=(host, port, rank_offset, world_size, backend, timeout_s, local_host),
        )

    def receive_weights(
        self, specs: Sequence[WeightSpec], version: int, verify: bool = False, bucket_bytes: int = 0
    ) -> List[SyncReport]:
        """Load the broadcast weights of policy ``version`` (buckets of ``bucket_bytes``; 0:
        one parameter each), the checksums taken when ``verify``; then drop the prefix cache,
        whose KV blocks were computed with the old weights (a shared prompt prefix would
        reuse them).  Each worker's report (tensor parallel: one per worker)."""
        self.version = None
        reports = self.llm.collective_rpc(
            "receive_weights", args=(list(specs), version, verify, bucket_bytes)
        )
        self.llm.reset_prefix_cache()
        self.version = version
        return list(reports)

    def sleep(self) -> None:
        """Free the weights and the KV cache from GPU memory (vLLM sleep level 2: the weights
        are discarded, the next sync brings new ones); :meth:`wake_up` before that sync."""
        self.llm.sleep(level=2)
        self.version = None

    def close(self) -> None:
        """Shut the engine down (its engine core and workers), once; the object is done."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

    def wake_up(self, tags: Optional[Sequence[str]] = None) -> None:
        """Bring back what :meth:`sleep` freed: ``tags`` ``["weights"]`` or ``["kv_cache"]``
        (vLLM's), both when None."""
        self.llm.wake_up(tags=list(tags) if tags else None)


__all__ = ["VLLMRolloutEngine", "config_dir", "outputs_to_batch", "sampling_params"]

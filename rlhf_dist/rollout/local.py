"""A rollout over an in-process sampler: what ``rlhf-dist eval --env`` continues trajectories
with (:class:`~rlhf_dist.rollout.multi_turn.MultiTurnRollout` around it).

The sampler is a backend's in-process one (:func:`~rlhf_dist.rollout.backends.make_sampler`:
HF generate on the loaded model, or one vLLM engine); :meth:`SamplerRollout.sample` is the
interface's building block -- ``n`` continuations of each left-padded token prefix -- so a
multi-turn rollout in eval runs the PPO driver's code, without Ray and without behaviour
log-probs.
"""

from __future__ import annotations

from typing import Any

from rlhf_dist.config import Config
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.interface import Rollout


class SamplerRollout(Rollout):
    """``sample(prompts, seed, n)`` by ``sampler.generate(ids, mask, seed, n=n)`` (the
    whole batch from one seed: HF's generator seed, vLLM's per-row seeds)."""

    def __init__(self, cfg: Config, tokenizer: Any, sampler: Any):
        super().__init__(cfg, tokenizer)
        self.sampler = sampler
        self.pad_token_id = sampler.pad_token_id

    def sample(self, prompts: Batch, seed: int, n: int) -> Batch:
        batch = self.sampler.generate(prompts["input_ids"], prompts["attention_mask"], seed, n=n)
        return batch.to("cpu")


__all__ = ["SamplerRollout"]

"""The ``hf`` rollout backend: Hugging Face ``generate``.

In the PPO driver the actor's own ranks sample (their DeepSpeed engine's module, ZeRO-3
parameters gathered for the generation), each for its share of the prompts, and return the
behaviour log-probs with the samples: there is no copy of the weights to sync.  In
``rlhf-dist eval`` / ``label`` an :class:`HFSampler` samples from the loaded model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence, Tuple

from rlhf_dist.rollout.interface import Metrics, Rollout

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from rlhf_dist.protocol import Batch


class HFRollout(Rollout):
    """``rollout.backend=hf``: the actor group's ``generate`` (one call per rank; the
    ranks' parts joined by :func:`~rlhf_dist.rollout.generate.concat_rollouts`)."""

    def generate(self, prompts: Batch, seed: int, rows: Sequence[dict]) -> Tuple[Batch, Metrics]:
        return self.actor.generate(prompts, seed, self.pad_token_id), {}

    def sample(self, prompts: Batch, seed: int, n: int) -> Batch:
        return self.actor.generate(prompts, seed, self.pad_token_id, n=n, logprobs=False)

    @classmethod
    def make_sampler(cls, *, model: Any, tokenizer: Any, rollout: Any, **_: Any) -> "HFSampler":
        if model is None:
            raise ValueError("backend hf samples from a loaded HF model; got none")
        return HFSampler(model, tokenizer, rollout)


class HFSampler:
    """HF ``generate`` through :class:`~rlhf_dist.rollout.HFGenerator`."""

    def __init__(self, model: Any, tokenizer: Any, rollout: Any):
        from rlhf_dist.rollout.generate import HFGenerator

        self.engine = HFGenerator(model, tokenizer, rollout)
        self.pad_token_id = self.engine.pad_token_id

    def generate(
        self,
        prompt_input_ids: torch.Tensor,
        prompt_attention_mask: torch.Tensor,
        seed: Optional[int],
        n: Optional[int] = None,
    ) -> Batch:
        """``(B, P)`` left-padded prompts → ``B · n`` rows (``n`` default
        ``rollout.n_samples_per_prompt``); ``seed`` seeds the whole batch."""
        return self.engine.generate(
            prompt_input_ids, prompt_attention_mask, generator_seed=seed, n=n
        )

    def close(self) -> None:
        """Nothing to release: the HF model belongs to the caller."""


__all__ = ["HFRollout", "HFSampler"]

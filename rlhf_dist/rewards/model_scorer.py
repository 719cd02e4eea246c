"""A reward model as a scorer of texts: ``scorer(prompts, responses) -> scores``, the one
implementation that ``rlhf-dist eval`` (``eval.evaluate.reward_scores``), ``rlhf-dist label``
(the ``rm:PATH`` judge) and ``serve-rm`` score with.

Each ``(prompt, response)`` is tokenised as the reward model's training data was
(:class:`rlhf_dist.data.Encoder`: left-truncated prompt, the response, eos, cut at
``max_length``; an empty response is ``prompt + eos``) and scored at its last token
(``model.sequence_scores``), in right-padded batches of ``batch_size``, in eval mode (the
model's mode is restored afterwards); ``normalize`` applies the model's saved score
statistics.  torch is imported when a batch is scored.
"""

from __future__ import annotations

from typing import Any, List, Sequence

from rlhf_dist.data import Encoder, join_response, pad


def scoring_ids(encoder: Encoder, prompt: str, response: str) -> List[int]:
    """Token ids the RM scores: ``prompt + response + EOS`` as in RM training
    (:func:`rlhf_dist.data.join_response`); an empty response is ``prompt + EOS``."""
    prompt_ids = encoder.prompt(prompt)
    response_ids = encoder.response(response)
    if not response_ids or response_ids == [encoder.eos_id]:
        return (prompt_ids + [encoder.eos_id])[: encoder.max_length]
    return join_response(prompt_ids, response_ids, encoder.eos_id, encoder.max_length)[0]


class RewardModelScorer:
    """``model`` (a scalar-head reward model) and its ``tokenizer`` as a scorer (see module)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 16,
        max_length: int = 256,
        max_prompt_length: int = 128,
        normalize: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.encoder = Encoder(tokenizer, max_length, max_prompt_length)
        self.batch_size, self.normalize = batch_size, normalize

    def input_ids(self, prompt: str, response: str) -> List[int]:
        """The token ids scored for one (prompt, response)."""
        return scoring_ids(self.encoder, prompt, response)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> List[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        ids = [self.input_ids(p, r) for p, r in zip(prompts, responses)]
        scores: List[float] = []
        for start in range(0, len(ids), self.batch_size):
            scores += self._score(ids[start : start + self.batch_size])
        return scores

    def _score(self, rows: List[List[int]]) -> List[float]:
        import torch

        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        input_ids = pad(rows, self.encoder.eos_id if pad_id is None else pad_id, "right")
        mask = pad([[1] * len(r) for r in rows], 0, "right")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model.sequence_scores(
                    input_ids.to(device), mask.to(device), normalize=self.normalize
                )
        finally:
            self.model.train(was_training)
        return out.float().cpu().tolist()


__all__ = ["RewardModelScorer", "scoring_ids"]

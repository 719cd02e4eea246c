"""Judges: the AI (or rule) feedback of RLAIF — score each (prompt, response) with a number.

A judge is any callable ``judge(prompts, responses) -> scores`` over two equally long lists of
strings, higher = better (the same signature as ``ppo.reward_fn``).  :func:`load_judge` turns
the ``--judge`` spec of ``rlhf-dist label`` into one:

* ``rm:PATH`` — a reward model saved by ``rlhf-dist rm`` (a scalar-head checkpoint with its
  tokenizer), scored on ``prompt + response + eos`` tokenised exactly like its training data
  (:class:`rlhf_dist.data.Encoder`), in batches (:class:`RewardModelJudge`);
* ``package.module:function`` — any Python callable by import path, e.g. the built-in
  ``rlhf_dist.rlaif.judges:toy_rule_judge``.

Importing this module is cheap: torch and transformers are imported when a reward model loads.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence

from rlhf_dist.toy import judge
from rlhf_dist.utils import imports

if TYPE_CHECKING:  # pragma: no cover
    import torch

Judge = Callable[[List[str], List[str]], List[float]]
RM_PREFIX = "rm:"
DEFAULT_MAX_LENGTH = 256         # = DataConfig.max_length (what the reward model trained with)
DEFAULT_MAX_PROMPT_LENGTH = 128  # = DataConfig.max_prompt_length


class JudgeError(ValueError):
    """A judge spec that cannot be turned into a judge; the message names the flag / field."""


# --------------------------------------------------------------------------- the toy rule judge


def toy_rule_score(prompt: str, response: str) -> float:
    """The toy task's rule (:attr:`rlhf_dist.toy.Verdict.score`): harmful prompt → refusal +1,
    anything else −1; benign prompt → refusal −1, an on-topic answer +1, an off-topic answer 0;
    a prompt about no toy topic 0."""
    return judge(prompt, response).score


def toy_rule_judge(prompts: Sequence[str], responses: Sequence[str]) -> List[float]:
    """:func:`toy_rule_score` of each pair: rule feedback, needing neither people nor a model."""
    _check_lengths(prompts, responses)
    return [toy_rule_score(p, r) for p, r in zip(prompts, responses)]


def _check_lengths(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"judge: {len(prompts)} prompts but {len(responses)} responses")


# --------------------------------------------------------------------------- reward-model judge


def default_device() -> str:
    """``"cuda"`` when an accelerator is visible, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class RewardModelJudge:
    """Scores with a scalar-head reward model: ``model.score`` of ``prompt + response + eos``.

    Token ids come from :class:`rlhf_dist.data.Encoder` (left-truncated prompt, eos appended,
    cut at ``max_length``) — what ``build_preference_dataset`` feeds the reward model in
    training.  An empty response is scored as ``prompt + eos``.  Rows are right-padded in
    batches of ``batch_size``, in eval mode (the model's mode is restored afterwards);
    ``normalize`` uses the model's saved score statistics.  Prompts are expected in the plain
    format (a reward model trained with ``data.apply_chat_template`` needs templated prompts).
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16,
                 max_length: int = DEFAULT_MAX_LENGTH,
                 max_prompt_length: int = DEFAULT_MAX_PROMPT_LENGTH, normalize: bool = False):
        from rlhf_dist.data import Encoder

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.tokenizer = model, tokenizer
        self.encoder = Encoder(tokenizer, max_length, max_prompt_length)
        self.batch_size, self.normalize = batch_size, normalize

    def input_ids(self, prompt: str, response: str) -> List[int]:
        """The token ids scored for one (prompt, response)."""
        if not self.encoder.response(response):
            return (self.encoder.prompt(prompt) + [self.encoder.eos_id])[:self.encoder.max_length]
        return self.encoder.sft(prompt, response)["input_ids"]

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> List[float]:
        _check_lengths(prompts, responses)
        ids = [self.input_ids(p, r) for p, r in zip(prompts, responses)]
        scores: List[float] = []
        for start in range(0, len(ids), self.batch_size):
            scores += self._score(ids[start:start + self.batch_size]).tolist()
        return scores

    def _score(self, rows: List[List[int]]) -> "torch.Tensor":
        import torch

        from rlhf_dist.data import pad

        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        input_ids = pad(rows, self.encoder.eos_id if pad_id is None else pad_id, "right")
        mask = pad([[1] * len(r) for r in rows], 0, "right")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model.sequence_scores(input_ids.to(device), mask.to(device),
                                       normalize=self.normalize)
        finally:
            self.model.train(was_training)
        return out.float().cpu()


def load_reward_judge(path: str, device: Optional[str] = None, batch_size: int = 16,
                      max_length: int = DEFAULT_MAX_LENGTH,
                      max_prompt_length: int = DEFAULT_MAX_PROMPT_LENGTH,
                      field: str = "--judge") -> RewardModelJudge:
    """A :class:`RewardModelJudge` for the reward model saved at the local directory ``path``.

    Refuses a checkpoint without a scalar head (a plain LM would get a random head).
    """
    spec = f"{field} {RM_PREFIX}{path}"
    local = os.path.expanduser(path)
    if not path or not os.path.isdir(local):
        raise JudgeError(f"{spec}: no such directory (expected a reward model saved by "
                         "`rlhf-dist rm`)")
    from transformers import AutoConfig

    from rlhf_dist.config import ModelConfig
    from rlhf_dist.models import load_scalar_model, load_tokenizer
    from rlhf_dist.models.scalar_head import is_scalar_head_config, is_sequence_classifier

    try:
        config = AutoConfig.from_pretrained(local)
    except (OSError, ValueError) as err:
        raise JudgeError(f"{spec}: not a Hugging Face model directory: {err}") from None
    if not (is_scalar_head_config(config) or is_sequence_classifier(config)):
        raise JudgeError(f"{spec}: not a reward model (no score head: neither ours nor a "
                         "*ForSequenceClassification); train one with `rlhf-dist rm` or pass "
                         "a scoring function as module:function")
    section = ModelConfig(name_or_path=local)
    try:
        tokenizer = load_tokenizer(section, field_prefix=field)
    except (OSError, ValueError) as err:
        raise JudgeError(f"{spec}: cannot load the tokenizer saved with it: {err}") from None
    model = load_scalar_model(section, tokenizer, role="reward", field_prefix=field)
    model.to(device or default_device())
    return RewardModelJudge(model, tokenizer, batch_size, max_length, max_prompt_length)


# --------------------------------------------------------------------------- import paths


def load_callable(spec: str, field: str = "--judge") -> Callable:
    """The object named by ``package.module:attr``; errors (:class:`JudgeError`) name
    ``field``."""
    return imports.load_callable(spec, field, JudgeError, "rm:PATH or package.module:function")


def load_judge(spec: str, device: Optional[str] = None, batch_size: int = 16,
               field: str = "--judge") -> Judge:
    """``rm:PATH`` → :func:`load_reward_judge`; ``package.module:function`` → that callable."""
    if not isinstance(spec, str) or not spec.strip():
        raise JudgeError(f"{field}: empty; expected rm:PATH or package.module:function")
    if spec.startswith(RM_PREFIX):
        return load_reward_judge(spec[len(RM_PREFIX):], device, batch_size, field=field)
    if ":" not in spec and os.path.isdir(os.path.expanduser(spec)):
        raise JudgeError(f"{field} {spec!r} is a directory; write rm:{spec} to judge with the "
                         "reward model saved there")
    return load_callable(spec, field)

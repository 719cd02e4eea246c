"""Judges: the AI (or rule) feedback of RLAIF — score each (prompt, response) with a number.

A judge is any callable ``judge(prompts, responses) -> scores`` over two equally long lists of
strings, higher = better (the same signature as ``ppo.reward_fn``).  :func:`load_judge` turns
the ``--judge`` spec of ``rlhf-dist label`` into one:

* ``rm:PATH`` — a reward model saved by ``rlhf-dist rm`` (a scalar-head checkpoint with its
  tokenizer), scored on ``prompt + response + eos`` tokenised exactly like its training data
  (:class:`rlhf_dist.data.Encoder`), in batches: the one text scorer,
  :class:`~rlhf_dist.rewards.model_scorer.RewardModelScorer`;
* ``package.module:function`` — any Python callable by import path, e.g. the built-in
  ``rlhf_dist.rlaif.judges:toy_rule_judge``.

Importing this module is cheap: torch and transformers are imported when a reward model loads.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence

from rlhf_dist.rewards.model_scorer import RewardModelScorer
from rlhf_dist.toy import judge
from rlhf_dist.utils import imports

Judge = Callable[[List[str], List[str]], List[float]]
RM_PREFIX = "rm:"
DEFAULT_MAX_LENGTH = 256  # = DataConfig.max_length (what the reward model trained with)
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


# the rm:PATH judge: a reward model scoring ``prompt + response + eos`` tokenised like its
# training data (the one text scorer of eval, label and serve-rm)
RewardModelJudge = RewardModelScorer


def load_reward_judge(
    path: str,
    device: Optional[str] = None,
    batch_size: int = 16,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_prompt_length: int = DEFAULT_MAX_PROMPT_LENGTH,
    field: str = "--judge",
) -> RewardModelJudge:
    """A :class:`RewardModelJudge` for the reward model saved at the local directory ``path``.

    Refuses a checkpoint without a scalar head (a plain LM would get a random head).
    """
    spec = f"{field} {RM_PREFIX}{path}"
    local = os.path.expanduser(path)
    if not path or not os.path.isdir(local):
        raise JudgeError(
            f"{spec}: no such directory (expected a reward model saved by `rlhf-dist rm`)"
        )
    from transformers import AutoConfig

    from rlhf_dist.config import ModelConfig
    from rlhf_dist.models import load_scalar_model, load_tokenizer
    from rlhf_dist.models.scalar_head import is_scalar_head_config, is_sequence_classifier

    try:
        config = AutoConfig.from_pretrained(local)
    except (OSError, ValueError) as err:
        raise JudgeError(f"{spec}: not a Hugging Face model directory: {err}") from None
    if not (is_scalar_head_config(config) or is_sequence_classifier(config)):
        raise JudgeError(
            f"{spec}: not a reward model (no score head: neither ours nor a "
            "*ForSequenceClassification); train one with `rlhf-dist rm` or pass "
            "a scoring function as module:function"
        )
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


def load_judge(
    spec: str, device: Optional[str] = None, batch_size: int = 16, field: str = "--judge"
) -> Judge:
    """``rm:PATH`` → :func:`load_reward_judge`; ``package.module:function`` → that callable."""
    if not isinstance(spec, str) or not spec.strip():
        raise JudgeError(f"{field}: empty; expected rm:PATH or package.module:function")
    if spec.startswith(RM_PREFIX):
        return load_reward_judge(spec[len(RM_PREFIX) :], device, batch_size, field=field)
    if ":" not in spec and os.path.isdir(os.path.expanduser(spec)):
        raise JudgeError(
            f"{field} {spec!r} is a directory; write rm:{spec} to judge with the "
            "reward model saved there"
        )
    return load_callable(spec, field)

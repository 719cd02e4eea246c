"""Reward functions of a PPO/GRPO run: built-in verifiers by name or ``module:function`` by
import path, each called on the decoded batch and checked; their weighted sum is the
sequence reward added to the RM score.

A function takes ``(prompts, responses, labels, extras)`` -- labels and extras one per
response, from ``data.label_key`` / ``data.extra_keys`` -- or the older ``(prompts,
responses)``, told apart by its signature; it returns one number per response.  A wrong
count or a non-number is a :class:`RewardError` naming the function and the row; a NaN/inf a
(skippable) ``NonFiniteError`` naming them too.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from rlhf_dist.utils.imports import load_callable

from .remote import RemoteReward
from .values import RewardError, check_rewards
from .verifiers import NEEDS_LABELS, VERIFIERS


def _takes_labels(fn: Callable) -> bool:
    """Whether ``fn`` is called with (prompts, responses, labels, extras): anything but the
    older form of exactly two positional parameters (prompts, responses)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the new form
        return True
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) != 2


class RewardFunction:
    """One named, weighted reward function; ``field`` is the config key it came from."""

    def __init__(
        self,
        spec: str,
        weight: float = 1.0,
        args: Optional[Dict[str, Any]] = None,
        field: str = "ppo.reward_fn",
    ):
        self.name, self.weight, self.field = spec, weight, field
        args = dict(args or {})
        if spec in VERIFIERS:
            try:
                self.fn = VERIFIERS[spec](**args)
            except (TypeError, ValueError) as err:  # wrong or bad args of the built-in
                raise RewardError(f"{field} {spec!r}: {err}") from None
        elif args:
            raise RewardError(f"{field} {spec!r}: args {args} are for the built-in rewards only")
        else:
            self.fn = load_callable(
                spec,
                field,
                RewardError,
                f"a built-in reward ({', '.join(VERIFIERS)}) or package.module:function",
            )
        self.takes_labels = _takes_labels(self.fn)

    def __call__(
        self,
        prompts: List[str],
        responses: List[str],
        labels: Sequence[Any],
        extras: Sequence[Dict[str, Any]],
        first_row: int = 0,
    ) -> torch.Tensor:
        """The rewards of the rows; errors name rows counted from ``first_row`` (the
        offset of this chunk in the iteration's batch)."""
        try:
            if self.takes_labels:
                values = self.fn(prompts, responses, list(labels), list(extras))
            else:
                values = self.fn(prompts, responses)
        except ValueError as err:
            raise RewardError(f"{self.field} {self.name!r}: {err}") from err
        return check_rewards(values, len(responses), f"{self.field} {self.name!r}", first_row)


class RewardSum:
    """``Σ weight · function`` over the configured reward functions (empty: all zeros)."""

    def __init__(self, functions: Sequence[RewardFunction]):
        self.functions = list(functions)

    def __bool__(self) -> bool:
        return bool(self.functions)

    def __call__(
        self,
        prompts: List[str],
        responses: List[str],
        labels: Sequence[Any],
        extras: Sequence[Dict[str, Any]],
        first_row: int = 0,
    ) -> torch.Tensor:
        total = torch.zeros(len(responses))
        for fn in self.functions:
            total += fn.weight * fn(prompts, responses, labels, extras, first_row)
        return total


def load_rewards(ppo: Any, label_key: Optional[str] = None) -> RewardSum:
    """``ppo.reward_fn`` (weight ``ppo.reward_fn_weight``), every ``ppo.rewards`` term and
    the RM at ``ppo.reward_url``, loaded (built-in args checked, the URL's health checked)
    before Ray starts; a verifier that compares with labels needs ``data.label_key``."""
    functions = [RewardFunction(ppo.reward_fn, ppo.reward_fn_weight)] if ppo.reward_fn else []
    functions += [
        RewardFunction(t.fn, t.weight, t.args, field=f"ppo.rewards[{i}].fn")
        for i, t in enumerate(ppo.rewards)
    ]
    for fn in functions:
        if fn.name in NEEDS_LABELS and label_key is None:
            raise RewardError(
                f"{fn.field}: {fn.name!r} compares each response with its "
                "prompt's label: set data.label_key (the label column)"
            )
    if ppo.reward_url:
        functions.append(
            RemoteReward(
                ppo.reward_url,
                ppo.reward_url_weight,
                ppo.reward_url_token_env,
                ppo.reward_url_batch_size,
                ppo.reward_url_timeout_s,
                ppo.reward_url_retries,
                protocol=ppo.reward_url_protocol,
            )
        )
    return RewardSum(functions)

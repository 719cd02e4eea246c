"""The environment contract of multi-turn rollouts, and the checks of what an environment
returns.

An environment is any class with these two methods (subclassing :class:`Env` is optional)::

    class MyEnv:
        def __init__(self, **env_args): ...              # Env(**env.args), per trajectory
        def reset(self, row: dict) -> str | list[message]: ...
        def step(self, action: str) -> (observation, reward, done) | (..., info): ...
        def close(self): ...                             # optional

* ``reset(row)`` gets the prompt row -- its ``prompt`` and, as the reward functions get them,
  ``label`` (``data.label_key``) and ``extras`` (``data.extra_keys``) -- and returns the first
  observation, the prompt the model sees: a text, or chat messages ``[{"role", "content"}]``.
* ``step(action)`` gets the model's decoded turn and returns ``(observation, reward, done)``
  or ``(observation, reward, done, info)``: ``observation`` is appended as the next input
  (``None``: nothing; a text is appended verbatim; messages -- e.g. ``{"role": "tool",
  "content": ...}`` -- are rendered by the conversation format, through the chat template
  when ``data.apply_chat_template`` is on, and end in the next generation prompt);
  ``reward`` is a finite number (the trajectory's reward is the sum of its steps');
  ``done`` a bool; ``info`` a dict whose numeric values are summed over the trajectory
  (``tool_calls``, ``tool_errors``) and logged.
* The episode also ends after ``env.max_turns`` model turns or at ``env.max_trajectory_tokens``
  (the rollout's side): :class:`~rlhf_dist.envs.episode.Episode` runs an environment with
  these checks, the timeout and ``env.on_error``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Union

from rlhf_dist.data.formatting import ROLE_PREFIX

Message = Dict[str, Any]
Observation = Union[str, List[Message]]
ROLES = tuple(ROLE_PREFIX)  # system, user, assistant, tool


class StepResult(NamedTuple):
    """One checked ``step``: ``info`` is ``{}`` when the environment gave none."""

    observation: Optional[Observation]
    reward: float
    done: bool
    info: Dict[str, Any]


class Env:
    """Optional base class of an environment (any class with ``reset`` and ``step`` will do);
    see the module for the contract."""

    def reset(self, row: Mapping[str, Any]) -> Observation:
        raise NotImplementedError

    def step(self, action: str):
        raise NotImplementedError

    def close(self) -> None:
        """Free what the environment holds (called once the trajectory ends)."""


class EnvTypeError(TypeError):
    """What an environment returned breaks the contract (the message says how)."""


def _kind(value: Any) -> str:
    return type(value).__name__


def check_messages(value: Any) -> List[Message]:
    """``value`` as a list of ``{role, content}`` messages, or :class:`EnvTypeError`."""
    if not value:
        raise EnvTypeError("an empty message list (return None for no observation)")
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise EnvTypeError(f"message {i} is a {_kind(message)}, not a {{role, content}} dict")
        if message.get("role") not in ROLES:
            raise EnvTypeError(
                f"message {i} has role {message.get('role')!r}, expected one of {list(ROLES)}"
            )
        if not isinstance(message.get("content"), str):
            raise EnvTypeError(
                f"message {i} content is a {_kind(message.get('content'))}, not a string"
            )
    return [dict(m) for m in value]


def check_observation(value: Any, first: bool = False) -> Optional[Observation]:
    """A text, a message list or (after the first) None; anything else is an
    :class:`EnvTypeError`."""
    if isinstance(value, str):
        if first and not value.strip():
            raise EnvTypeError("an empty prompt")
        return value
    if isinstance(value, (list, tuple)):
        return check_messages(value)
    if value is None and not first:
        return None
    expected = "a string or a list of messages" + ("" if first else " or None")
    raise EnvTypeError(f"the observation is a {_kind(value)}, expected {expected}")


def _is_bool(value: Any) -> bool:
    """A Python or numpy bool (numpy is not imported for the check)."""
    return isinstance(value, bool) or (
        _kind(value) == "bool_" and type(value).__module__ == "numpy"
    )


def check_step(value: Any) -> StepResult:
    """``(observation, reward, done[, info])`` checked and normalised."""
    if not isinstance(value, (tuple, list)) or len(value) not in (3, 4):
        size = f" of {len(value)}" if isinstance(value, (tuple, list)) else ""
        raise EnvTypeError(
            f"step returned a {_kind(value)}{size}, expected (observation, "
            "reward, done) or (observation, reward, done, info)"
        )
    observation, reward, done = value[:3]
    info = value[3] if len(value) == 4 else {}
    observation = check_observation(observation)
    if isinstance(reward, bool) or not isinstance(reward, numbers.Real):
        raise EnvTypeError(f"the reward is {reward!r} ({_kind(reward)}), expected a number")
    if not math.isfinite(float(reward)):
        raise EnvTypeError(f"the reward is {float(reward)}, expected a finite number")
    if not _is_bool(done):
        raise EnvTypeError(f"done is {done!r} ({_kind(done)}), expected a bool")
    if not isinstance(info, Mapping):
        raise EnvTypeError(f"info is a {_kind(info)}, expected a dict")
    return StepResult(observation, float(reward), bool(done), dict(info))

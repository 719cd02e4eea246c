"""Tool calling as an environment (``env.name: tools``), and the toy calculator task's
(``env.name: toy_calculator``).

Each model turn is parsed with the ``env.tool_format`` syntax (:mod:`.parsers`):

* a turn with tool calls: each call runs (:func:`~.tools.run_tool`, ``tool_timeout_s`` each)
  and its result -- or a clear ``error: ...`` for a malformed call, an unknown tool, a tool
  exception or a timeout -- is the observation; reward 0, not done;
* a turn without a call is the final answer: the episode ends with the reward of the
  ``score`` function on it.

``info`` of each step counts ``tool_calls`` and ``tool_errors`` (the episode sums them).
Observations are tool messages ``[{"role": "tool", "content": result}, ...]`` (one per
call), which the rollout renders through the chat template or, in the plain format, as
``"\\nTool: 579\\nAssistant:"``; ``observation: text`` returns that plain text itself.

``score`` is a reward function as ``ppo.rewards`` names them -- a built-in verifier
(``exact_match``, ``math``; ``score_args`` are its arguments) or ``package.module:function``
taking ``(prompts, responses, labels, extras)`` -- called on the final answer with the row's
``label`` and ``extras``; no score: the final answer's reward is 0 (the run's own
``ppo.rewards`` may score the transcript).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from rlhf_dist.config.checks import ConfigError
from rlhf_dist.config.registries import TOOL_FORMATS
from rlhf_dist.data.formatting import render_messages

from .base import Env, Observation, StepResult, check_messages
from .parsers import BadCall
from .tools import ToolResult, describe_tools, load_tools, run_tool

OBSERVATIONS = ("message", "text")


class ToolEnv(Env):
    """The model calls ``tools`` in the ``tool_format`` syntax until it answers (see module).

    ``system_prompt`` (optional) is put first as a system message ("{tools}" in it is
    replaced by one line per tool: name, signature, first docstring line); it needs a
    message-list prompt.
    """

    uses_tools = True  # reads env.tools / env.tool_format (check_env refuses them elsewhere)
    default_tools: Sequence[str] = ()
    default_format = "hermes"
    default_score: Optional[str] = None

    def __init__(
        self,
        tools: Optional[Sequence[str]] = None,
        tool_format: Optional[str] = None,
        score: Optional[str] = None,
        score_args: Optional[Dict[str, Any]] = None,
        tool_timeout_s: float = 10.0,
        observation: str = "message",
        system_prompt: Optional[str] = None,
    ):
        self.tools = load_tools(list(tools or self.default_tools))
        if not self.tools:
            raise ConfigError("env.tools: a tool environment needs at least one tool")
        self.format = tool_format or self.default_format
        self.parser = TOOL_FORMATS.get(self.format, ConfigError)()
        if observation not in OBSERVATIONS:
            raise ConfigError(
                f"env.args.observation: got {observation!r}, expected one of {list(OBSERVATIONS)}"
            )
        self.observation, self.tool_timeout_s = observation, tool_timeout_s
        self.system_prompt = system_prompt
        self.score = _load_score(score or self.default_score, score_args)
        self.row: Mapping[str, Any] = {}

    @classmethod
    def from_config(cls, env) -> "ToolEnv":
        """``env.tools`` and ``env.tool_format`` (when set) and ``env.args``."""
        return cls(**{"tools": env.tools or None, "tool_format": env.tool_format, **env.args})

    @classmethod
    def check_config(cls, env) -> None:
        """Build one to check the tools, the syntax and the score (cheap: imports only)."""
        try:
            cls.from_config(env)
        except TypeError as err:
            raise ConfigError(f"env.args: {err}") from None

    # ------------------------------------------------------------------ the contract

    def reset(self, row: Mapping[str, Any]) -> Observation:
        self.row = row
        prompt = row.get("prompt")
        if self.system_prompt is None:
            return prompt
        if not isinstance(prompt, (list, tuple)):
            raise ValueError(
                f"system_prompt needs the prompt as a message list, got a {type(prompt).__name__}"
            )
        text = self.system_prompt.replace("{tools}", describe_tools(self.tools))
        return [{"role": "system", "content": text}] + check_messages(prompt)

    def step(self, action: str) -> StepResult:
        calls = self.parser.parse(action)
        if not calls:  # no call: the final answer
            return StepResult(None, self._score(action), True, {"tool_calls": 0, "tool_errors": 0})
        results = [self._run(call) for call in calls]
        info = {"tool_calls": len(results), "tool_errors": sum(r.error for r in results)}
        return StepResult(self._observe([r.text for r in results]), 0.0, False, info)

    # ------------------------------------------------------------------ parts

    def _run(self, call) -> ToolResult:
        if isinstance(call, BadCall):
            hint = getattr(self.parser, "hint", "")
            return ToolResult(
                f"error: cannot read the tool call {call.text!r}: {call.reason}"
                + (f" (write {hint})" if hint and hint not in call.reason else ""),
                True,
            )
        return run_tool(call, self.tools, self.tool_timeout_s)

    def _observe(self, texts: List[str]) -> Observation:
        messages = [{"role": "tool", "content": text} for text in texts]
        if self.observation == "message":
            return messages
        return "\n" + render_messages(messages, add_generation_prompt=True)

    def _score(self, answer: str) -> float:
        if self.score is None:
            return 0.0
        prompt = self.row.get("prompt")
        values = self.score(
            [prompt if isinstance(prompt, str) else str(prompt)],
            [answer],
            [self.row.get("label")],
            [self.row.get("extras") or {}],
        )
        return float(values[0])


def _load_score(spec: Optional[str], args: Optional[Dict[str, Any]]):
    if spec is None:
        if args:
            raise ConfigError("env.args.score_args: given without env.args.score")
        return None
    from rlhf_dist.rewards.functions import RewardError, RewardFunction  # imports torch

    try:
        return RewardFunction(spec, 1.0, args, field="env.args.score")
    except RewardError as err:
        raise ConfigError(str(err)) from None


class ToyCalculatorEnv(ToolEnv):
    """The toy agent task (:mod:`rlhf_dist.toy.tool_task`): the ``add`` tool in the plain
    syntax; reward 1 for the right sum as the final answer."""

    default_tools = ("add",)
    default_format = "plain"
    default_score = "rlhf_dist.toy.tool_task:answer_reward"

"""The environment section (``env.*``): multi-turn agent rollouts against an environment.

``env.name: null`` keeps today's single-turn rollouts.  A name is a built-in of
:data:`~rlhf_dist.config.registries.ENVIRONMENTS` or the user's ``package.module:Class``;
the names here are checked for their form only (nothing is imported): ``check_env`` in
:mod:`rlhf_dist.envs` imports them, before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from rlhf_dist.config.checks import ConfigError, _choice, _positive, _require
from rlhf_dist.config.registries import ENVIRONMENTS, TOOL_FORMATS, TOOLS

ENV_ON_ERROR = ("error", "zero_reward")


@dataclass
class EnvConfig:
    """A multi-turn trajectory is the prompt, then (model turn -> ``env.step`` ->
    observation)* until the environment says done, ``max_turns`` model turns, or
    ``max_trajectory_tokens`` tokens; ``rollout.max_new_tokens`` caps each model turn."""

    # the environment: a built-in (tools, toy_calculator) or package.module:Class; null =
    # single-turn rollouts (one response per prompt, scored once)
    name: Optional[str] = None
    # keyword arguments of the environment's constructor: Env(**env.args), one per trajectory
    args: Dict[str, Any] = field(default_factory=dict)
    max_turns: int = 4  # model turns per trajectory at most; the trajectory ends after the last
    # tokens of a whole trajectory (prompt, model turns and observations); a longer one is
    # cut there and marked truncated
    max_trajectory_tokens: int = 512
    # seconds one env reset or step may take (it runs in a thread; a hung step's thread is
    # abandoned, it cannot be killed); 0 = no limit
    step_timeout_s: float = 30.0
    # error | zero_reward: an env that raises, returns wrong types or times out stops the job
    # naming the row, or ends that trajectory with reward 0 (counted, logged)
    on_error: str = "error"
    # (tool environments) the tools: built-in names (add, calculator) or package.module:function;
    # empty = the environment's own
    tools: List[str] = field(default_factory=list)
    # (tool environments) the tool-call syntax: hermes (<tool_call>{json}</tool_call>, Qwen's
    # templates) | plain (CALL name(arg, ...), for tiny models) | package.module:Class;
    # null = the environment's own
    tool_format: Optional[str] = None
    # 0 = environments step on the driver (threads); N > 0 = in a pool of N Ray actors
    workers: int = 0
    # where the step rewards count in the token rewards: false = on the trajectory's last
    # token, with the rest of its reward; true = each on the last token of the model turn that
    # earned it (GAE and REINFORCE++ then see when it came; group estimators sum them: the same)
    turn_rewards: bool = False

    def __post_init__(self):
        _positive("env.max_turns", self.max_turns)
        _positive("env.max_trajectory_tokens", self.max_trajectory_tokens)
        _positive("env.step_timeout_s", self.step_timeout_s, allow_zero=True)
        _positive("env.workers", self.workers, allow_zero=True)
        _choice("env.on_error", self.on_error, ENV_ON_ERROR)
        _require(
            isinstance(self.args, dict),
            "env.args",
            f"expected a mapping of keyword arguments, got {self.args!r}",
        )
        if self.name is not None:
            ENVIRONMENTS.check(self.name, ConfigError)
        else:
            for key in ("tools", "tool_format", "turn_rewards"):
                _require(
                    not getattr(self, key),
                    f"env.{key}",
                    "needs an environment: set env.name (e.g. tools)",
                )
            _require(not self.args, "env.args", "needs an environment: set env.name")
        for i, tool in enumerate(self.tools):
            _require(
                isinstance(tool, str) and bool(tool),
                f"env.tools[{i}]",
                f"expected a tool name, got {tool!r}",
            )
            TOOLS.check(tool, ConfigError)
        _require(
            len(set(self.tools)) == len(self.tools),
            "env.tools",
            f"names a tool twice: {list(self.tools)}",
        )
        if self.tool_format is not None:
            TOOL_FORMATS.check(self.tool_format, ConfigError)

    @property
    def enabled(self) -> bool:
        """Multi-turn rollouts (an environment is named)."""
        return self.name is not None

    def check_lengths(self, max_prompt_length: int) -> None:
        """The trajectory budget leaves room for a model token after the longest prompt."""
        _require(
            not self.enabled or self.max_trajectory_tokens > max_prompt_length,
            "env.max_trajectory_tokens",
            f"{self.max_trajectory_tokens} must be larger than data.max_prompt_length="
            f"{max_prompt_length}, or no model token fits after the prompt",
        )

"""Environments for multi-turn agent rollouts (issue 29): the contract (:mod:`.base`), one
trajectory's checked, time-limited run (:mod:`.episode`), tool calling (:mod:`.tool_env`,
:mod:`.parsers`, :mod:`.tools`) and the early config check (:mod:`.checks`).

No Ray, DeepSpeed or vLLM here: environments step on the driver (threads) or in a Ray pool
built above this layer (an env host, :mod:`.host`).  Environments, tools and tool-call syntaxes
are named through the registries of :mod:`rlhf_dist.config.registries` (``ENVIRONMENTS``, ``TOOLS``,
``TOOL_FORMATS``).
"""

from .base import Env, EnvTypeError, Message, Observation, StepResult, check_observation, check_step
from .checks import check_env
from .episode import EnvError, EnvFactory, EnvStats, Episode, describe_row, env_builder
from .host import EnvHostLost, LocalEnvHost, RemoteCallError
from .parsers import BadCall, HermesParser, PlainParser, ToolCall
from .timeout import CallTimeout, call_with_timeout
from .tools import ToolResult, add, calculator, describe_tools, load_tools, run_tool
from .tool_env import ToolEnv, ToyCalculatorEnv

__all__ = [
    "BadCall",
    "CallTimeout",
    "Env",
    "EnvError",
    "EnvFactory",
    "EnvHostLost",
    "EnvStats",
    "EnvTypeError",
    "Episode",
    "HermesParser",
    "LocalEnvHost",
    "Message",
    "Observation",
    "PlainParser",
    "RemoteCallError",
    "StepResult",
    "ToolCall",
    "ToolEnv",
    "ToolResult",
    "ToyCalculatorEnv",
    "add",
    "calculator",
    "call_with_timeout",
    "check_env",
    "check_observation",
    "check_step",
    "describe_row",
    "describe_tools",
    "env_builder",
    "load_tools",
    "run_tool",
]

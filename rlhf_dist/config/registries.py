"""Registries of names whose implementations live above ``config/`` (the layers that may
import torch, Ray or vLLM): each maps a name to a ``package.module:attr`` spec, imported on
first use, so config checks a name without importing its implementation.  Users add
entries with ``REGISTRY.register(name)`` or name their own ``package.module:Class``."""

from __future__ import annotations

from rlhf_dist.utils.imports import Registry

# rollout.backend: the rollout backends (rlhf_dist.rollout.interface for the contract)
ROLLOUT_BACKENDS = Registry(
    "rollout.backend",
    {
        "hf": "rlhf_dist.rollout.hf:HFRollout",
        "vllm": "rlhf_dist.workers.vllm_rollout:VLLMRollout",
    },
)

# env.name: the environments of multi-turn rollouts (rlhf_dist.envs.base for the contract)
ENVIRONMENTS = Registry(
    "env.name",
    {
        "tools": "rlhf_dist.envs.tool_env:ToolEnv",
        "toy_calculator": "rlhf_dist.envs.tool_env:ToyCalculatorEnv",
    },
)
# env.tools: the functions a tool environment calls by name (rlhf_dist.envs.tools)
TOOLS = Registry(
    "env.tools",
    {
        "add": "rlhf_dist.envs.tools:add",
        "calculator": "rlhf_dist.envs.tools:calculator",
    },
    expected="package.module:function",
)
# env.tool_format: tool-call syntaxes, each a parser class (rlhf_dist.envs.parsers)
TOOL_FORMATS = Registry(
    "env.tool_format",
    {
        "hermes": "rlhf_dist.envs.parsers:HermesParser",
        "plain": "rlhf_dist.envs.parsers:PlainParser",
    },
)

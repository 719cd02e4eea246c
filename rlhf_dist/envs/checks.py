"""The early check of the ``env`` section (call it before Ray starts): every name imports."""

from __future__ import annotations

import inspect

from rlhf_dist.config.checks import ConfigError
from rlhf_dist.config.registries import ENVIRONMENTS, TOOL_FORMATS

from .tools import load_tools


def check_env(env) -> None:
    """Import what ``env`` (:class:`~rlhf_dist.config.env.EnvConfig`) names: ``env.name``
    (a class with ``reset`` and ``step``), its ``env.args`` against its constructor, and
    ``env.tools`` / ``env.tool_format`` (only a tool environment takes them).  A problem is a
    :class:`ConfigError` naming the key; nothing is run.  No environment: nothing to check."""
    if env.name is None:
        return
    env_cls = ENVIRONMENTS.get(env.name, ConfigError)
    if inspect.isclass(env_cls):
        missing = [m for m in ("reset", "step") if not callable(getattr(env_cls, m, None))]
        if missing:
            raise ConfigError(
                f"env.name {env.name!r}: {env_cls.__name__} has no "
                f"{' or '.join(missing)} method; an environment has "
                "reset(row) and step(action)"
            )
    if env.tools or env.tool_format is not None:
        if not getattr(env_cls, "uses_tools", False):
            key = "env.tools" if env.tools else "env.tool_format"
            raise ConfigError(
                f"{key}: env.name {env.name!r} is not a tool environment "
                "(tools, toy_calculator or a subclass of "
                "rlhf_dist.envs.ToolEnv)"
            )
        load_tools(env.tools)
        if env.tool_format is not None:
            TOOL_FORMATS.get(env.tool_format, ConfigError)
    check = getattr(env_cls, "check_config", None)
    if check is not None:
        check(env)
        return
    if hasattr(env_cls, "from_config"):
        return
    try:
        inspect.signature(env_cls).bind(**env.args)
    except TypeError as err:
        raise ConfigError(f"env.args: {env.name!r} does not take {dict(env.args)}: {err}") from None
    except ValueError:  # no signature to read (a builtin): the first trajectory will tell
        pass

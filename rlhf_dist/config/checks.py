"""Validation helpers shared by the config sections: every message names the field."""

from __future__ import annotations

from typing import Any, Sequence


class ConfigError(ValueError):
    """A bad config value; the message names the field (``section.key``) and the value."""


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _choice(key: str, value: Any, options: Sequence[Any]) -> None:
    _require(value in options, key, f"got {value!r}, expected one of {list(options)}")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    _require(ok, key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")

"""``package.module:function`` specs (reward functions, judges) → the object they name."""
from __future__ import annotations

import functools
import importlib
from typing import Callable, Type


def load_callable(spec: str, field: str, error: Type[Exception] = ValueError,
                  expected: str = "package.module:function") -> Callable:
    """The callable named by ``package.module:attr`` (``attr`` may be dotted); a bad spec
    raises ``error`` naming ``field``, the spec and what is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise error(f"{field} {spec!r}: expected {expected}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise error(f"{field} {spec!r}: cannot import module {module_name!r}: {err}") from None
    try:
        obj = functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        raise error(f"{field} {spec!r}: module {module_name!r} has no attribute "
                    f"{attr!r}") from None
    if not callable(obj):
        raise error(f"{field} {spec!r}: {attr!r} is a {type(obj).__name__}, not callable")
    return obj

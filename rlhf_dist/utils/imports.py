"""``package.module:function`` specs (reward functions, judges) → the object they name, and
:class:`Registry`, the name-or-spec registries config keys are checked against."""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, Dict, List, Type


def load_callable(
    spec: str,
    field: str,
    error: Type[Exception] = ValueError,
    expected: str = "package.module:function",
) -> Callable:
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
        raise error(f"{field} {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise error(f"{field} {spec!r}: {attr!r} is a {type(obj).__name__}, not callable")
    return obj


class Registry:
    """Names → objects for a config key (``field``): built-ins are ``package.module:attr``
    specs imported on first use (so the registry itself imports nothing heavy and may sit
    below the layers that implement its entries); :meth:`register` adds a class or function
    by name (a decorator); :meth:`get` also accepts a ``package.module:attr`` spec that is
    not registered (user code named in the config)."""

    def __init__(
        self, field: str, builtins: Dict[str, str], expected: str = "package.module:Class"
    ):
        self.field, self.expected = field, expected
        self._entries: Dict[str, Any] = dict(builtins)

    def names(self) -> List[str]:
        return sorted(self._entries)

    def register(self, name: str) -> Callable[[Any], Any]:
        def add(obj: Any) -> Any:
            self._entries[name] = obj
            return obj

        return add

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def check(self, name: str, error: Type[Exception] = ValueError) -> None:
        """Cheap (imports nothing): ``name`` is registered or has the form of a spec."""
        if name in self._entries:
            return
        module, sep, attr = name.partition(":")
        if not (sep and module and attr):
            raise error(
                f"{self.field}: got {name!r}, expected one of {self.names()} or {self.expected}"
            )

    def get(self, name: str, error: Type[Exception] = ValueError) -> Any:
        """The object ``name`` stands for (a built-in's module imported now)."""
        self.check(name, error)
        entry = self._entries.get(name, name)
        if isinstance(entry, str):
            entry = load_callable(entry, self.field, error, self.expected)
        return entry

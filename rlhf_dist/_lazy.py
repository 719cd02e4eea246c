"""Lazy package exports (PEP 562): ``import rlhf_dist.X`` stays cheap; a name's submodule (and
torch, transformers…) is imported on first use.

A package lists its public names once, in ``_EXPORTS`` (name -> submodule), with
``__all__ = sorted(_EXPORTS)``; an ``if TYPE_CHECKING:`` import block for IDEs names the same
names from the same submodules; no submodule is named like a name it exports (importing it
would replace the name by the module).  tests/test_exports.py checks all three."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple


def lazy_exports(
    package: str, exports: Dict[str, str], namespace: Dict[str, Any]
) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public ``name`` lives in submodule
    ``exports[name]``; a resolved name is cached in the package ``namespace``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__

"""Package exports, one source of truth per package (issue 28: the lists had drifted).

* A **lazy** package (PEP 562, :mod:`rlhf_dist._lazy`) names its public names once, in
  ``_EXPORTS`` (name -> the submodule that defines it): ``__all__`` is ``sorted(_EXPORTS)``;
  every name resolves to the object its submodule defines, also after that submodule was
  imported directly (a name equal to its submodule's name would then be the module); an
  ``if TYPE_CHECKING:`` block, where one is kept for IDEs and type checkers, imports exactly the
  ``_EXPORTS`` names, each from the submodule ``_EXPORTS`` gives.
* An **eager** package (its ``__init__`` imports its submodules): every name of ``__all__``
  is bound, and where the ``__init__`` only re-exports (it defines no function or class of its
  own), every name it imports from its own submodules is in ``__all__``.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

import rlhf_dist

ROOT = Path(rlhf_dist.__file__).parent
SOURCES = ROOT.parent  # where package ``a.b`` is ``a/b/__init__.py``
PACKAGES = sorted(
    ".".join(p.parent.relative_to(ROOT.parent).parts) for p in ROOT.rglob("__init__.py")
)
# Packages reworked by others while this test arrived: delete an entry when its __init__
# follows the rule above.  (package -> what is off)
PENDING: Dict[str, str] = {}


def _init(package: str) -> ast.Module:
    return ast.parse((SOURCES / package.replace(".", "/") / "__init__.py").read_text())


def _is_lazy(package: str) -> bool:
    return any(
        isinstance(node, (ast.Assign, ast.AnnAssign))
        and "_EXPORTS"
        in [
            t.id
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)
        ]
        for node in _init(package).body
    )


LAZY = [p for p in PACKAGES if _is_lazy(p)]
EAGER = [p for p in PACKAGES if not _is_lazy(p)]


def _own_imports(package: str, body) -> Dict[str, str]:
    """``name -> submodule`` of the ``from <package>.<sub> import name`` (or ``from .sub``)
    statements in ``body``."""
    found = {}
    for node in body:
        if isinstance(node, ast.ImportFrom):
            module = (
                f"{package}.{node.module}" if node.level == 1 and node.module else node.module or ""
            )
            if module.startswith(package + ".") and "." not in module[len(package) + 1 :]:
                found.update({a.asname or a.name: module[len(package) + 1 :] for a in node.names})
    return found


def _type_checking_imports(package: str) -> Dict[str, str]:
    for node in _init(package).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return _own_imports(package, node.body)
    return {}


def _lazy_problems(package: str):
    module = __import__(package, fromlist=["_EXPORTS"])
    exports = dict(module._EXPORTS)
    if list(module.__all__) != sorted(exports):
        yield f"__all__ is not sorted(_EXPORTS): {sorted(set(module.__all__) ^ set(exports))}"
    typed = _type_checking_imports(package)
    if typed and typed != exports:
        yield (
            "the TYPE_CHECKING imports differ from _EXPORTS: "
            f"{sorted(set(typed.items()) ^ set(exports.items()))}"
        )


@pytest.mark.parametrize("package", LAZY)
def test_a_lazy_package_lists_its_names_once(package):
    assert list(_lazy_problems(package)) == [] or package in PENDING


RESOLVE = """
import importlib, json, sys, types
problems = {}
for package in sys.argv[1:]:
    exports = importlib.import_module(package)._EXPORTS
    for sub in sorted(set(exports.values())):  # imported directly first, as callers may
        importlib.import_module(f"{package}.{sub}")
    for name, sub in exports.items():
        try:
            value, defined = getattr(sys.modules[package], name), getattr(
                sys.modules[f"{package}.{sub}"], name)
        except AttributeError as err:
            problems.setdefault(package, []).append(f"{name}: {err}")
            continue
        if isinstance(value, types.ModuleType) or value is not defined:
            problems.setdefault(package, []).append(f"{name} is {value!r}, not {sub}.{name}")
print(json.dumps(problems))
"""


def test_every_lazy_name_resolves_to_its_definition():
    run = subprocess.run(
        [sys.executable, "-c", RESOLVE, *LAZY], capture_output=True, text=True, check=True
    )
    problems = json.loads(run.stdout.splitlines()[-1])
    assert {p: v for p, v in problems.items() if p not in PENDING} == {}


@pytest.mark.parametrize("package", EAGER)
def test_an_eager_package_exports_what_it_imports(package):
    module = __import__(package, fromlist=["__all__"])
    names = list(getattr(module, "__all__", []))
    imported = _own_imports(package, _init(package).body)
    problems = [f"{n} in __all__ is not bound" for n in names if not hasattr(module, n)]
    if not any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in _init(package).body):
        # only re-exports (no code of its own, that could import for its own use)
        problems += [
            f"{n} (from .{sub}) is not in __all__"
            for n, sub in imported.items()
            if not n.startswith("_") and n not in names
        ]
    assert problems == [] or package in PENDING


def test_drift_is_reported(tmp_path, monkeypatch):
    """A lazy package whose __all__ and TYPE_CHECKING block drifted from _EXPORTS."""
    pkg = tmp_path / "driftpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from driftpkg.a import f, g\n\n_EXPORTS = {'f': 'a', 'h': 'a'}\n__all__ = ['f']\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "SOURCES", tmp_path)
    assert list(_lazy_problems("driftpkg")) == [
        "__all__ is not sorted(_EXPORTS): ['h']",
        "the TYPE_CHECKING imports differ from _EXPORTS: [('g', 'a'), ('h', 'a')]",
    ]

"""The package's layering (DESIGN.md "Layout"): lower layers never import upper ones, and only
``workers/``, ``engine/`` and the rollout engines import ray, deepspeed, vllm or
torch.distributed.  Read from the source (every import, also the ones inside functions)."""
import ast
from pathlib import Path

import pytest

import rlhf_dist

ROOT = Path(rlhf_dist.__file__).parent
# algo ← data/models/engine ← rollout/objectives ← workers ← trainers ← cli/demo
LAYER = {"algo": 0, "_lazy": 0, "protocol": 1, "config": 1, "utils": 1,
         "data": 2, "toy": 2, "models": 2, "engine": 2,
         "rollout": 3, "objectives": 3, "rewards": 3,
         "workers": 4, "trainers": 5, "eval": 5, "rlaif": 5,
         "cli": 6, "demo": 6, "serving": 6, "__init__": 6}
HEAVY = {"ray": {"workers"}, "deepspeed": {"workers", "engine"},
         "torch.distributed": {"workers", "engine"}, "vllm": {"workers", "rollout"}}


def _imports(path: Path, package: str):
    """(line, module) of each import in ``path``; relative imports name their own package."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, f"rlhf_dist.{package}" if node.level else (node.module or "")


def _package(path: Path) -> str:
    part = path.relative_to(ROOT).parts[0]
    return part[:-3] if part.endswith(".py") else part


SOURCES = sorted(ROOT.rglob("*.py"))


def test_every_package_has_a_layer():
    assert {_package(p) for p in SOURCES} <= set(LAYER)


def _violations(path: Path, package: str):
    where = path.relative_to(ROOT) if ROOT in path.parents else path
    for line, module in _imports(path, package):
        parts = module.split(".")
        if parts[0] == "rlhf_dist" and len(parts) > 1 and LAYER[parts[1]] > LAYER[package]:
            yield f"{where}:{line} imports {module} (layer {LAYER[parts[1]]}) from {package} " \
                  f"(layer {LAYER[package]})"
        for heavy, allowed in HEAVY.items():
            if (module == heavy or module.startswith(heavy + ".")) and package not in allowed:
                yield f"{where}:{line} imports {module} from {package}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_points_up(path):
    assert list(_violations(path, _package(path))) == []


def test_an_upward_or_heavy_import_is_reported(tmp_path):
    fake = tmp_path / "mod.py"
    fake.write_text("import torch\n\n\ndef f():\n    from rlhf_dist.trainers.dpo import run\n"
                    "    import ray\n")
    found = list(_violations(fake, "objectives"))
    assert len(found) == 2
    assert (
        f"{fake}:5 imports rlhf_dist.trainers.dpo (layer 5) from objectives (layer 3)" == found[0]
    )
    assert found[1].endswith(":6 imports ray from objectives")
    assert list(_violations(fake, "cli")) == [f"{fake}:6 imports ray from cli"]

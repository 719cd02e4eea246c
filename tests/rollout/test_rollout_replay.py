"""ReplayBuffer: every row once per epoch, deterministic per seed, reshuffled per epoch."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rlhf_dist.rollout as rollout
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout import ReplayBuffer


def experience(start, n):
    ids = torch.arange(start, start + n)
    return Batch({"id": ids, "x": ids[:, None].float().expand(n, 3).clone()},
                 extras={"name": [f"r{i}" for i in ids.tolist()]}, meta={"step": 0})


def epochs_of(buffer, mb, epochs, seed):
    batches = list(buffer.minibatches(mb, epochs=epochs, seed=seed))
    per_epoch = len(buffer) // mb
    assert len(batches) == epochs * per_epoch and all(len(b) == mb for b in batches)
    for b in batches:  # rows stay aligned across tensors and extras
        assert torch.equal(b["x"][:, 0].long(), b["id"])
        assert b["name"] == [f"r{i}" for i in b["id"].tolist()]
    return [torch.cat([b["id"] for b in batches[e * per_epoch:(e + 1) * per_epoch]]).tolist()
            for e in range(epochs)]


def test_every_row_once_per_epoch_deterministic_and_reshuffled():
    buffer = ReplayBuffer()
    buffer.add(experience(0, 6))
    buffer.add(experience(6, 4))
    assert len(buffer) == 10
    orders = epochs_of(buffer, mb=5, epochs=3, seed=7)
    assert all(sorted(o) == list(range(10)) for o in orders)
    assert orders[0] != orders[1] and orders[1] != orders[2]
    assert orders[0] != list(range(10))
    assert epochs_of(buffer, 5, 3, seed=7) == orders
    assert epochs_of(buffer, 5, 3, seed=8) != orders


def test_errors_and_clear():
    buffer = ReplayBuffer()
    with pytest.raises(ValueError, match="empty"):
        list(buffer.minibatches(2))
    buffer.add(experience(0, 10))
    with pytest.raises(ValueError, match=r"mini_batch_size=3 does not divide the 10 rows"):
        next(buffer.minibatches(3))
    buffer.clear()
    assert len(buffer) == 0


def test_package_imports_cheaply_and_nothing_distributed():
    code = ("import sys, rlhf_dist.rollout; "
            "assert not {'torch', 'transformers'} & set(sys.modules), 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)
    forbidden = ("ray", "deepspeed", "torch.distributed")
    root = Path(rollout.__file__).parent
    for path in [*root.glob("*.py"), root.parent / "protocol.py"]:
        source = path.read_text()
        assert len(source.splitlines()) <= 400, path.name
        for node in ast.walk(ast.parse(source)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in forbidden), name
    assert set(rollout.__all__) <= set(dir(rollout))
    for name in rollout.__all__:
        assert getattr(rollout, name) is not None

"""ReplayBuffer: every row once per epoch, deterministic per seed, reshuffled per epoch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rlhf_dist.rollout as rollout
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout import ReplayBuffer, epoch_permutation
from rlhf_dist.rollout.replay import learner_plan


def experience(start, n):
    ids = torch.arange(start, start + n)
    return Batch(
        {"id": ids, "x": ids[:, None].float().expand(n, 3).clone()},
        extras={"name": [f"r{i}" for i in ids.tolist()]},
        meta={"step": 0},
    )


def epochs_of(buffer, mb, epochs, seed):
    batches = list(buffer.minibatches(mb, epochs=epochs, seed=seed))
    per_epoch = len(buffer) // mb
    assert len(batches) == epochs * per_epoch and all(len(b) == mb for b in batches)
    for b in batches:  # rows stay aligned across tensors and extras
        assert torch.equal(b["x"][:, 0].long(), b["id"])
        assert b["name"] == [f"r{i}" for i in b["id"].tolist()]
    return [
        torch.cat([b["id"] for b in batches[e * per_epoch : (e + 1) * per_epoch]]).tolist()
        for e in range(epochs)
    ]


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


@pytest.mark.parametrize("world, epochs", [(1, 1), (2, 1), (3, 2), (2, 3)])
def test_learner_plan_gives_each_rank_its_slice_of_every_minibatch(world, epochs):
    """Rank r's step j of an epoch trains on slice r (Batch.chunk) of minibatch j of that
    epoch's permutation, read from its share -- the rows a scatter of each minibatch gave."""
    data, m, seed = experience(0, 12), 6, 5
    plans = learner_plan(len(data), m, epochs, seed, world)
    assert len(plans) == world
    for epoch in range(epochs):
        order = epoch_permutation(len(data), seed, epoch)
        minibatches = [data.index_select(order[s : s + m]) for s in range(0, len(data), m)]
        for rank, plan in enumerate(plans):
            share = data.index_select(plan.rows)
            assert len(plan.steps[epoch]) == len(minibatches)
            for index, minibatch in zip(plan.steps[epoch], minibatches):
                expected = minibatch.chunk(world)[rank]
                got = share.index_select(index)
                assert torch.equal(got["id"], expected["id"]) and got["name"] == expected["name"]
    if epochs == 1:  # the shares partition the experience
        rows = torch.cat([p.rows for p in plans]).sort().values
        assert torch.equal(rows, torch.arange(12))
        assert [len(p.rows) for p in plans] == [12 // world] * world


def test_learner_plan_errors():
    with pytest.raises(ValueError, match="mini_batch_size=5 does not divide the 12 rows"):
        learner_plan(12, 5, 1, 0)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        learner_plan(12, 6, 0, 0)
    with pytest.raises(ValueError, match="a minibatch of 2 rows cannot be split over 3 ranks"):
        learner_plan(12, 2, 1, 0, world_size=3)


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
    code = (
        "import sys, rlhf_dist.rollout; "
        "assert not {'torch', 'transformers'} & set(sys.modules), 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    forbidden = ("ray", "deepspeed", "torch.distributed")
    root = Path(rollout.__file__).parent
    for path in [*root.glob("*.py"), root.parent / "protocol.py"]:
        source = path.read_text()
        assert len(source.splitlines()) <= 400, path.name
        for node in ast.walk(ast.parse(source)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not any(name == f or name.startswith(f + ".") for f in forbidden), name
    assert set(rollout.__all__) <= set(dir(rollout))
    for name in rollout.__all__:
        assert getattr(rollout, name) is not None

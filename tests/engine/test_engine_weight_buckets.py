"""``ModelEngine.full_parameter_buckets`` (the weight sync's per-bucket gather) on real one-rank
DeepSpeed engines, ZeRO-0 and ZeRO-3, in full and with a LoRA adapter: the groups hold exactly
``full_parameters()``'s names and bits, in order; under ZeRO-3 only the group's own parameters
(a LoRA layer's adapter with its base weight) are whole while it is read, never the whole
model."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.config import DeepSpeedSection, LoraConfig, TrainConfig
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.models.lora import apply_lora

from engine_helpers import INPUTS, build

TRAIN = TrainConfig(train_batch_size=4, micro_batch_size=2, lr=5e-2)


def _engine(stage: int, lora: bool) -> ModelEngine:
    make = (lambda: apply_lora(build(), LoraConfig(r=4, alpha=8.0))) if lora else build
    engine = ModelEngine.trained(
        make, DeepSpeedSection(zero_stage=stage), TRAIN, dp_size=1, total_steps=10
    )
    for micro in INPUTS.split(TRAIN.micro_batch_size):  # move the adapter off its zero init
        engine.backward(engine(micro, labels=micro).loss)
        engine.step()
    return engine


@pytest.fixture(
    scope="module", params=[(0, False), (3, False), (3, True)], ids=["zero0", "zero3", "zero3-lora"]
)
def engine(request):
    return _engine(*request.param)


def _whole(engine: ModelEngine):
    """Module parameters gathered right now (ZeRO-3's status; all of them otherwise)."""
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    return [
        p
        for p in engine.module.parameters()
        if getattr(p, "ds_status", ZeroParamStatus.AVAILABLE) == ZeroParamStatus.AVAILABLE
    ]


@pytest.mark.parametrize("sizes", ["ones", "threes", "all"])
@torch.no_grad()
def test_groups_are_full_parameters_in_order_gathered_a_group_at_a_time(engine, sizes):
    expected = [(name, tensor.clone()) for name, tensor in engine.full_parameters()]
    n = len(expected)
    assert [name for name, _ in expected] == [name for name, _ in engine.parameter_shapes()]
    groups = {"ones": [1] * n, "threes": [3] * (n // 3) + ([n % 3] if n % 3 else []), "all": [n]}[
        sizes
    ]
    total = len(list(engine.module.parameters()))
    got, most_whole = [], 0
    for size, group in zip(groups, engine.full_parameter_buckets(groups)):
        assert len(group) == size
        got.extend((name, tensor.clone()) for name, tensor in group)
        most_whole = max(most_whole, len(_whole(engine)))
    assert [name for name, _ in got] == [name for name, _ in expected]
    for (name, value), (_, want) in zip(got, expected):
        assert torch.equal(value, want), name
    if engine.zero_stage == 3:
        assert _whole(engine) == []  # all partitioned again afterwards
        # one parameter at a time: at most a LoRA layer (base weight + A + B), else one
        if sizes == "ones":
            assert most_whole == (3 if engine.lora else 1)
        elif sizes == "threes":
            assert 3 <= most_whole < total
        else:
            assert most_whole == total


def test_sizes_must_cover_every_parameter(engine):
    n = len(engine.parameter_shapes())
    with pytest.raises(ValueError, match=f"buckets of {n - 1} parameters for {n}"):
        next(engine.full_parameter_buckets([n - 1]))

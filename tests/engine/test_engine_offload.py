"""ModelEngine.offload()/reload() on real one-rank DeepSpeed engines (gloo, in this process).

Training with offload()+reload() after every micro-batch must give the same losses and the
same final weights, bit for bit, as training without; after offload() the states are marked
offloaded (DeepSpeed's ``offloaded_states``) and the tensors it does not move have new
(CPU) storage: on this CPU-only machine the copies are real, as they are on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.config import DeepSpeedSection, TrainConfig
from rlhf_dist.engine.engine import ModelEngine

from engine_helpers import INPUTS, build, train_steps

STEPS = 2
TRAIN = TrainConfig(train_batch_size=4, micro_batch_size=2, lr=1e-2)  # 2 micro-batches a step


def offloaded_states(engine: ModelEngine):
    return {state.value for state in getattr(engine.ds.optimizer, "offloaded_states", ())}


def storages(tensors):
    """Where each tensor's data lives (an offloaded tensor gets new storage)."""
    return [t.data_ptr() for t in tensors if t is not None and t.numel() > 0]


def adam_states(optimizer):
    return [v for state in optimizer.state.values() for v in state.values()]


# The tensors our own code moves (what DeepSpeed's offload_states leaves on the device).
OURS = {
    0: lambda ds: list(ds.module.parameters()) + adam_states(ds.optimizer),
    2: lambda ds: [],
    # ZeRO-3 with torch's AdamW: DeepSpeed moves the master partitions and moments of its
    # FusedAdam only.
    3: lambda ds: (
        list(ds.optimizer.fp32_partitioned_groups_flat) + adam_states(ds.optimizer.optimizer)
    ),
}
DEEPSPEED_MOVES = {
    0: set(),  # ZeRO-0: no ZeRO optimizer, DeepSpeed cannot offload
    2: {"hp_params", "lp_params", "lp_grads", "optim_states"},
    3: {"lp_params", "lp_grads", "contiguous_grad_buffer"},
}


def train(stage: int, offload: bool, **extra_zero):
    """Train STEPS optimiser steps; with ``offload``, offload() twice and reload() twice after
    every micro-batch (idempotent), checking each time what offload() did."""
    ds = DeepSpeedSection(zero_stage=stage, extra={"zero_optimization": extra_zero})
    engine = ModelEngine.trained(build, ds, TRAIN, dp_size=1, total_steps=10)
    losses = train_steps(
        engine,
        TRAIN.micro_batch_size,
        STEPS,
        after_micro=(
            (lambda micro: check_offload_reload(engine, stage, micro)) if offload else None
        ),
    )
    with engine.gathered():
        weights = {k: v.detach().clone() for k, v in engine.module.named_parameters()}
    return losses, weights


def check_offload_reload(engine: ModelEngine, stage: int, micro: torch.Tensor) -> None:
    ours = OURS[stage](engine.ds)
    before = storages(ours)
    engine.offload()
    engine.offload()
    assert engine.offloaded and offloaded_states(engine) == DEEPSPEED_MOVES[stage]
    assert all(a != b for a, b in zip(before, storages(ours), strict=True))  # new storage
    with pytest.raises(RuntimeError, match="reload"):
        engine(micro)
    engine.reload()
    engine.reload()
    assert not engine.offloaded and not offloaded_states(engine)


def assert_identical(a, b):
    assert a[0] == b[0]  # every loss, as floats
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        assert torch.equal(a[1][name], b[1][name]), name


@pytest.mark.slow  # trains two engines step by step (6-12 s)
@pytest.mark.parametrize("stage", [0, 2])
def test_trained_offload_keeps_training_bit_identical(stage):
    """ZeRO-2 through DeepSpeed's offload_states; ZeRO-0 (refused by DeepSpeed) by us."""
    plain, offloaded = train(stage, offload=False), train(stage, offload=True)
    assert_identical(plain, offloaded)
    assert plain[0][-1] < plain[0][0] - 0.2  # it did train (ZeRO-0: 4.18 → 3.86)


@pytest.mark.slow  # trains two engines step by step (6-12 s)
def test_zero3_offload_keeps_training_bit_identical():
    """Every parameter sharded (persistence threshold 0), as in a large model; the default
    (small parameters kept whole) is what the Ray PPO offload test's ZeRO-3 actor runs."""
    plain = train(3, offload=False, stage3_param_persistence_threshold=0)
    offloaded = train(3, offload=True, stage3_param_persistence_threshold=0)
    assert_identical(plain, offloaded)


@pytest.mark.parametrize("stage", [0, 3])
def test_frozen_engine_offload_moves_weights_and_keeps_outputs(stage):
    engine = ModelEngine.frozen(build, DeepSpeedSection(zero_stage=stage), 2, dp_size=1)
    with torch.no_grad():
        expected = engine(INPUTS).logits
        weights = [getattr(p, "ds_tensor", p) for p in engine.module.parameters()]
        before = storages(weights)
        engine.offload()
        after = storages(weights)
        assert engine.offloaded and len(after) == len(before)
        assert all(a != b for a, b in zip(before, after))  # every weight in new storage
        assert all(w.device.type == "cpu" for w in weights)
        engine.reload()
        assert torch.equal(engine(INPUTS).logits, expected)


@pytest.mark.slow  # trains two engines step by step (6-12 s)
@pytest.mark.parametrize("stage", [1, 2])
def test_lora_offload_moves_the_frozen_base_too(stage):
    """ZeRO-1/2 hold only the trained (adapter) parameters in DeepSpeed's groups: the frozen
    base, most of a LoRA model's memory, must move as well — every parameter and buffer gets
    new storage on CPU, and training goes on bit for bit as without the offload."""
    from rlhf_dist.config import LoraConfig
    from rlhf_dist.models.lora import apply_lora

    def run(offload: bool):
        engine = ModelEngine.trained(
            lambda: apply_lora(build(), LoraConfig(r=4, alpha=8.0)),
            DeepSpeedSection(zero_stage=stage),
            TRAIN,
            dp_size=1,
            total_steps=10,
        )

        def moved_every_tensor(micro):
            tensors = list(engine.module.parameters()) + list(engine.module.buffers())
            frozen = [p for p in engine.module.parameters() if not p.requires_grad]
            # the base is most of the model's memory
            assert sum(p.numel() for p in frozen) > sum(t.numel() for t in tensors) / 2
            before = storages(tensors)
            engine.offload()
            assert all(a != b for a, b in zip(before, storages(tensors), strict=True))
            assert all(t.device.type == "cpu" for t in tensors)
            engine.reload()

        losses = train_steps(
            engine, TRAIN.micro_batch_size, after_micro=moved_every_tensor if offload else None
        )
        return losses, {k: v.detach().clone() for k, v in engine.module.named_parameters()}

    assert_identical(run(False), run(True))

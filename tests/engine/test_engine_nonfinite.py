"""A non-finite loss on real one-rank DeepSpeed engines (gloo, in this process).

``train.on_nonfinite=error`` stops before the backward.  ``skip_step`` drops the whole update:
under ZeRO 1-3 the NaN goes backward and DeepSpeed's overflow check drops the update on the
boundary (the weights and Adam's moments stay bit for bit those of the step before, and the
next steps train normally); under ZeRO 0 only a window with nothing accumulated yet can be
dropped.  The NaN is injected by multiplying one micro-batch's real loss by NaN.
"""

from __future__ import annotations

import math

import pytest
import torch
from engine_helpers import INPUTS, build

from rlhf_dist.algo import NonFiniteError
from rlhf_dist.config import DeepSpeedSection, TrainConfig
from rlhf_dist.engine.engine import ModelEngine

MICRO = INPUTS.split(2)[:2]  # 2 micro-batches per optimiser step


def engine_for(stage: int, on_nonfinite: str) -> ModelEngine:
    train = TrainConfig(train_batch_size=4, micro_batch_size=2, lr=1e-2, on_nonfinite=on_nonfinite)
    return ModelEngine.trained(
        build, DeepSpeedSection(zero_stage=stage), train, dp_size=1, total_steps=10
    )


def optimiser_step(engine: ModelEngine, nan_at=None) -> float:
    """One update of the two micro-batches; micro-batch ``nan_at``'s loss made NaN."""
    losses = []
    for i, micro in enumerate(MICRO):
        loss = engine(micro, labels=micro).loss
        if i == nan_at:
            loss = loss * float("nan")
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)


def weights(engine: ModelEngine):
    with engine.gathered():
        return {k: v.detach().clone() for k, v in engine.module.named_parameters()}


def moments(engine: ModelEngine):
    """Adam's state (step, exp_avg, exp_avg_sq) of the ZeRO optimizer's inner torch AdamW."""
    state = engine.ds.optimizer.optimizer.state.values()
    return {f"{i}.{k}": v.clone() for i, s in enumerate(state) for k, v in s.items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("nan_at", [0, 1])
def test_skip_step_drops_the_update_and_training_goes_on(stage, nan_at):
    engine = engine_for(stage, "skip_step")
    first = optimiser_step(engine)
    before, adam = weights(engine), moments(engine)
    with pytest.raises(
        NonFiniteError,
        match=r"^non-finite loss \(nan here\) on ranks \[0\] "
        r"of 1; DeepSpeed dropped the update$",
    ) as err:
        optimiser_step(engine, nan_at=nan_at)
    assert err.value.skippable
    assert_same(weights(engine), before)  # the update was dropped whole
    assert_same(moments(engine), adam)
    assert engine.ds.skipped_steps == 1
    after = [optimiser_step(engine) for _ in range(3)]  # accumulation windows still aligned
    assert all(math.isfinite(x) for x in after) and after[-1] < first - 0.05
    assert not all(torch.equal(before[k], v) for k, v in weights(engine).items())
    assert engine.ds.skipped_steps == 1 and engine.global_steps == 5


def test_skip_step_under_zero0_drops_a_window_with_nothing_accumulated():
    engine = engine_for(0, "skip_step")
    optimiser_step(engine)
    before = weights(engine)
    with pytest.raises(NonFiniteError, match=r"^non-finite loss \(nan here\)") as err:
        optimiser_step(engine, nan_at=0)  # raised before the backward: nothing accumulated
    assert err.value.skippable
    assert_same(weights(engine), before)
    assert math.isfinite(optimiser_step(engine))  # the next window starts on a boundary
    with pytest.raises(
        NonFiniteError,
        match=r"half an accumulated update cannot be dropped "
        r"under deepspeed.zero_stage=0",
    ) as err:
        optimiser_step(engine, nan_at=1)
    assert not err.value.skippable


def test_error_mode_stops_before_the_backward():
    engine = engine_for(2, "error")
    optimiser_step(engine)
    before = weights(engine)
    with pytest.raises(
        NonFiniteError,
        match=r"^non-finite loss \(nan here\) on ranks \[0\] "
        r"of 1$",
    ) as err:
        optimiser_step(engine, nan_at=0)
    assert not err.value.skippable
    assert_same(weights(engine), before) and engine.ds.skipped_steps == 0

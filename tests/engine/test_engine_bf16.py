"""bf16 on CPU (``deepspeed.bf16=true``, the model built in bfloat16): what every example
config of a cluster sets.  Real one-rank DeepSpeed engines at ZeRO 0, 2 and 3: the loss falls,
the idle offload keeps training bit for bit (ZeRO 2/3; ZeRO-0's bf16 wrapper holds flat weights
and is refused by name), and a save / load in the middle continues exactly as the unbroken run.
"""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.config import DeepSpeedSection, TrainConfig
from rlhf_dist.engine.engine import ModelEngine

from engine_helpers import build, train_steps

pytestmark = pytest.mark.slow  # three engines per stage

TRAIN = TrainConfig(train_batch_size=4, micro_batch_size=2, lr=1e-2)
STEPS = 4


def bf16_engine(stage: int) -> ModelEngine:
    ds = DeepSpeedSection(
        zero_stage=stage,
        bf16=True,
        extra={"zero_optimization": {"stage3_param_persistence_threshold": 0}}
        if stage == 3
        else {},
    )
    return ModelEngine.trained(
        lambda: build().to(torch.bfloat16), ds, TRAIN, dp_size=1, total_steps=10
    )


def train(engine: ModelEngine, steps: int, offload: bool = False):
    def offload_and_reload(micro):
        engine.offload()
        engine.reload()

    return train_steps(
        engine, TRAIN.micro_batch_size, steps, after_micro=offload_and_reload if offload else None
    )


def weights(engine: ModelEngine):
    return {k: v.detach().float().clone() for k, v in engine.full_parameters()}


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_bf16_trains_resumes_exactly_and_offloads(stage, tmp_path):
    engine = bf16_engine(stage)
    assert next(engine.module.parameters()).dtype == torch.bfloat16
    first = train(engine, STEPS // 2)
    engine.save(tmp_path)
    rest = train(engine, STEPS // 2)
    assert rest[-1] < first[0] - 0.2  # it learns in bf16
    unbroken = weights(engine)

    resumed = bf16_engine(stage)
    resumed.load(tmp_path)
    assert train(resumed, STEPS // 2) == rest  # every loss, as floats
    again = weights(resumed)
    assert all(torch.equal(again[k], unbroken[k]) for k in unbroken)

    if stage == 0:  # DeepSpeed's bf16 wrapper keeps flattened fp32 copies of the weights
        with pytest.raises(NotImplementedError, match="ZeRO-0 with fp16/bf16"):
            resumed.offload()
        return
    offloaded = bf16_engine(stage)
    offloaded.load(tmp_path)
    assert train(offloaded, STEPS // 2, offload=True) == rest
    assert all(torch.equal(weights(offloaded)[k], unbroken[k]) for k in unbroken)

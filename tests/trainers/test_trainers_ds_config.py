"""The pure DeepSpeed config builder: exact dicts, written out by hand."""

import pytest

from rlhf_dist.config import ConfigError, DeepSpeedSection, TrainConfig
from rlhf_dist.engine import build_ds_config, build_frozen_ds_config


def _train(**kw):
    base = dict(train_batch_size=16, micro_batch_size=2, max_grad_norm=0.5)
    return TrainConfig(**{**base, **kw})


def _expected(zero, train=16, micro=2, accum=4, clip=0.5, bf16=False):
    return {
        "train_batch_size": train,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def test_stage0_two_ranks_derives_accumulation():
    # 16 = micro 2 × accum 4 × 2 ranks
    train = _train()
    assert build_ds_config(DeepSpeedSection(zero_stage=0), train, 2) == _expected({"stage": 0})
    assert train.gradient_accumulation_steps is None  # pure: the section is not filled in


def test_stage2_one_rank_with_optimizer_offload():
    ds = DeepSpeedSection(zero_stage=2, offload_optimizer=True)
    assert build_ds_config(ds, _train(), 1) == _expected(
        {"stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": False}}, accum=8
    )


def test_stage3_full_offload_bf16():
    ds = DeepSpeedSection(zero_stage=3, offload_optimizer=True, offload_param=True, bf16=True)
    assert build_ds_config(ds, _train(micro_batch_size=4), 4) == _expected(
        {
            "stage": 3,
            "offload_optimizer": {"device": "cpu", "pin_memory": False},
            "offload_param": {"device": "cpu", "pin_memory": False},
        },
        micro=4,
        accum=1,
        bf16=True,
    )


def test_extra_is_merged_recursively_and_wins():
    ds = DeepSpeedSection(
        zero_stage=2,
        extra={
            "zero_optimization": {"reduce_bucket_size": 1000, "stage": 1},
            "gradient_clipping": 2.0,
            "bf16": {"enabled": True},
            "communication_data_type": "fp32",
        },
    )
    expected = _expected({"stage": 1, "reduce_bucket_size": 1000}, clip=2.0, bf16=True)
    expected["communication_data_type"] = "fp32"
    assert build_ds_config(ds, _train(), 2) == expected
    assert ds.extra["zero_optimization"] == {"reduce_bucket_size": 1000, "stage": 1}  # untouched


def test_explicit_accumulation_must_agree():
    assert (
        build_ds_config(DeepSpeedSection(), _train(gradient_accumulation_steps=4), 2)[
            "gradient_accumulation_steps"
        ]
        == 4
    )
    with pytest.raises(ConfigError, match=r"train.gradient_accumulation_steps: 3 conflicts"):
        build_ds_config(DeepSpeedSection(), _train(gradient_accumulation_steps=3), 2)


def test_indivisible_batch_names_the_fields():
    with pytest.raises(
        ConfigError,
        match=r"train.train_batch_size: 6 is not divisible by "
        r"train.micro_batch_size=2 × data-parallel ranks=2",
    ):
        build_ds_config(DeepSpeedSection(), _train(train_batch_size=6), 2)


@pytest.mark.parametrize("stage, frozen_stage", [(0, 0), (1, 0), (2, 0), (3, 3)])
def test_frozen_model_shards_only_under_stage3(stage, frozen_stage):
    ds = DeepSpeedSection(zero_stage=stage, bf16=True)
    assert build_frozen_ds_config(ds, micro_batch_size=8, dp_size=2) == {
        "train_batch_size": 16,
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": frozen_stage},
        "bf16": {"enabled": True},
        "steps_per_print": 10**9,
    }


def test_frozen_stage3_offloads_params_when_asked():
    ds = DeepSpeedSection(zero_stage=3, offload_param=True)
    assert build_frozen_ds_config(ds, 4, 1)["zero_optimization"] == {
        "stage": 3,
        "offload_param": {"device": "cpu", "pin_memory": False},
    }


def test_frozen_config_takes_extra_less_its_training_keys():
    ds = DeepSpeedSection(
        zero_stage=3,
        extra={
            "optimizer": {"type": "AdamW"},
            "gradient_clipping": 0.5,
            "train_batch_size": 99,
            "communication_data_type": "fp32",
            "zero_optimization": {
                "stage3_prefetch_bucket_size": 1000,
                "offload_optimizer": {"device": "cpu"},
            },
        },
    )
    config = build_frozen_ds_config(ds, micro_batch_size=2, dp_size=2)
    assert config["communication_data_type"] == "fp32"
    assert config["zero_optimization"] == {"stage": 3, "stage3_prefetch_bucket_size": 1000}
    assert config["train_batch_size"] == 4 and "optimizer" not in config
    assert "gradient_clipping" not in config

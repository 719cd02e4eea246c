"""configs/tiny/dpo_ray.yaml runs as is (shortened), with the actor offloaded when idle and the
reference in the actor's processes; a reference group of another size than the actor's is
refused before Ray starts."""

from __future__ import annotations

import pytest

from rlhf_dist.config import ConfigError, load_config
from ray_helpers import CONFIGS, cli

STEPS = 6


def test_reference_ranks_must_match_the_actor():
    from rlhf_dist.trainers.dpo_ray import RayDPOTrainer

    cfg = load_config(str(CONFIGS / "dpo_ray.yaml"), ["resources.reference.devices_per_node=1"])
    with pytest.raises(ConfigError, match=r"resources.reference: 1 ranks.*resources.actor \(2\)"):
        RayDPOTrainer(cfg)


@pytest.mark.slow
def test_tiny_dpo_ray_config_trains_evaluates_and_offloads(tmp_path):
    run = cli(
        "dpo-ray",
        "dpo_ray",
        tmp_path / "out",
        f"train.max_steps={STEPS}",
        "train.eval_every=3",
        "logging.backend=none",
        "resources.actor.offload_when_idle=true",
        "resources.reference_in_actor=true",
    ).check()
    # no reference group: a frozen engine next to the policy on each actor rank, offloaded with
    # it, scores the pairs; at the first step it is the policy (loss ln 2 exactly)
    assert run.last("resources/reference_in_actor") == 1.0
    assert run.last("placement/actor_nodes") == 1.0 and not run.series("placement/reference_nodes")
    losses = run.series("train/loss")
    assert len(losses) == STEPS and losses[0] == pytest.approx(0.6931472, abs=1e-6)
    assert sum(losses[3:]) / 3 < losses[0] - 0.02, losses
    # evals at step 3 and at the end; the policy moved away from the reference on held-out pairs
    margins = run.by_step("eval/reward_margin")
    assert sorted(margins) == [3, STEPS] and margins[STEPS] > 0, margins
    # the actor spent its idle time offloaded; there is no reference group to log
    assert run.series("perf/actor_offloaded") == [1.0] * STEPS
    assert all(s > 0 for s in run.series("perf/actor_offload_s"))
    assert not run.series("perf/reference_offloaded")
    assert run.last("ref/checksum_start") == run.last("ref/checksum_end")
    assert (run.out / "model" / "model.safetensors").is_file()


def test_lora_with_idle_offload_under_zero3_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"resources.actor.offload_when_idle: does not work "
        r"with model.lora under ZeRO-3",
    ):
        load_config(
            str(CONFIGS / "dpo_ray.yaml"),
            ["model.lora.r=8", "resources.actor.offload_when_idle=true"],
        )


@pytest.mark.slow
def test_lora_dpo_on_ray_uses_the_actor_base_as_reference(tmp_path):
    """No reference group: the actor answers the reference calls with its adapter off (the
    first loss is ln 2 exactly), under ZeRO-2 with the actor offloaded when idle."""
    run = cli(
        "dpo-ray",
        "dpo_ray",
        tmp_path / "out",
        f"train.max_steps={STEPS}",
        "train.eval_every=0",
        "logging.backend=none",
        "deepspeed.zero_stage=2",
        "resources.actor.offload_when_idle=true",
        "model.lora.r=8",
        "model.lora.alpha=16",
        "train.lr=2e-3",
    ).check()
    assert run.last("resources/reference_shared_base") == 1.0
    assert run.last("placement/actor_nodes") == 1.0 and not run.series("placement/reference_nodes")
    losses = run.series("train/loss")
    assert len(losses) == STEPS and losses[0] == pytest.approx(0.6931472, abs=1e-6)
    assert sum(losses[3:]) / 3 < losses[0] - 0.02, losses
    assert run.last("ref/checksum_start") == run.last("ref/checksum_end")
    assert run.last("params/actor_trainable") < run.last("params/actor_total") / 5
    assert (run.out / "model" / "model.safetensors").is_file()
    assert (run.out / "model" / "adapter" / "adapter_model.safetensors").is_file()

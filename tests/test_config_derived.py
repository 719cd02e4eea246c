"""Derived values come from config only, in explicit steps: ``Config._derive`` at load (the
auto/null keys), ``Config.resolve`` (accumulation), the size records of ``config.sizes``;
the checks read and never assign; ``load_config(job=...)`` checks the job's sizes at load."""

import copy
import dataclasses
from pathlib import Path

import pytest

from rlhf_dist.config import ConfigError, PPOSizes, RayDPOSizes, load_config, save_config, to_dict

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def _unchanged(cfg, *calls):
    """Run each call on ``cfg`` twice; the config must be equal, field by field, after."""
    before = copy.deepcopy(cfg)
    for call in calls:
        call(cfg)
        call(cfg)
    assert cfg == before and to_dict(cfg) == to_dict(before)


@pytest.mark.parametrize(
    "path", [None, *CONFIGS], ids=lambda p: "defaults" if p is None else p.name
)
def test_checks_do_not_mutate_any_shipped_config(path):
    cfg = load_config(None if path is None else str(path))
    _unchanged(cfg, lambda c: c.check())
    # the derive step at load is idempotent: building the config again changes nothing
    assert dataclasses.replace(cfg) == cfg


def test_auto_and_null_keys_are_derived_once_at_load(tmp_path):
    cfg = load_config(None, ["data.max_prompt_length=40", "rollout.max_new_tokens=24"])
    assert cfg.dpo.layout == "shared_prompt" and cfg.resources.rollout.max_model_len == 40 + 24
    assert load_config(None, ["train.padding_free=true"]).dpo.layout == "packed"
    assert load_config(None, ["model.attn_implementation=flash_attention_2"]).dpo.layout == "padded"
    assert load_config(None, ["dpo.layout=padded"]).dpo.layout == "padded"  # as typed
    assert (
        load_config(None, ["resources.rollout.max_model_len=500"]).resources.rollout.max_model_len
        == 500
    )
    saved = save_config(dataclasses.replace(cfg, output_dir=str(tmp_path)))
    assert load_config(str(saved)) == dataclasses.replace(cfg, output_dir=str(tmp_path))


def test_cross_section_errors_name_the_field_and_leave_the_config_as_it_was():
    with pytest.raises(ConfigError, match=r"^dpo.layout: packed with train.padding_free=False"):
        load_config(None, ["dpo.layout=packed"])
    cfg = load_config(None, [])
    cfg.dpo.layout = "packed"  # made inconsistent after load: check refuses, assigns nothing
    before = copy.deepcopy(cfg)
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"^dpo.layout: packed with"):
            cfg.check()
    assert cfg == before


def test_accumulation_is_pure_and_resolve_is_idempotent():
    cfg = load_config(None, ["train.train_batch_size=16", "train.micro_batch_size=2"])
    _unchanged(cfg, lambda c: c.train.accumulation_steps(2))
    assert cfg.train.accumulation_steps(2) == 16 // (2 * 2) == 4
    assert cfg.train.gradient_accumulation_steps is None
    assert cfg.resolve(2).resolve(2).train.gradient_accumulation_steps == 4


def test_ppo_sizes_by_hand_and_read_without_assigning():
    cfg = load_config(
        None,
        [
            "rollout.rollout_batch_size=6",
            "rollout.n_samples_per_prompt=4",
            "ppo.mini_batch_size=8",
            "ppo.ppo_epochs=2",
            "ppo.iterations=5",
            "resources.actor.devices_per_node=2",
            "train.micro_batch_size=2",
        ],
    )
    sizes = cfg.ppo_sizes
    # 6 prompts x 4 samples = 24 rows; 24 / 8 = 3 minibatches x 2 epochs = 6 steps x 5 its;
    # actor: 8 rows / (2 ranks x 2 per micro-batch) = 2 micro-batches; critic: 8 / (1 x 2) = 4
    assert sizes == PPOSizes(
        sequences=24,
        prompts_per_actor_rank=3,
        minibatches=3,
        steps_per_iteration=6,
        total_steps=30,
        accumulation={"actor": 2, "critic": 4},
    )
    _unchanged(cfg, lambda c: c.ppo_sizes)
    grpo = load_config(
        None, ["ppo.advantage_estimator=group_norm", "rollout.n_samples_per_prompt=2"]
    )
    assert grpo.ppo_sizes.accumulation == {"actor": 4}  # no critic: 8 / (1 x 2)


def test_ray_dpo_sizes_by_hand_and_errors_name_the_field():
    ray = [
        "dpo.mode=ray",
        "resources.actor.devices_per_node=2",
        "train.train_batch_size=8",
        "train.micro_batch_size=2",
    ]
    cfg = load_config(None, [*ray, "resources.reference.devices_per_node=2"])
    assert cfg.ray_dpo_sizes == RayDPOSizes(world=2, accumulation=2, reference_group=True)
    _unchanged(cfg, lambda c: c.ray_dpo_sizes)
    assert cfg.train.gradient_accumulation_steps is None
    mismatched = load_config(None, ray)  # a reference group of 1 rank for 2 actor ranks
    with pytest.raises(
        ConfigError,
        match=r"^resources.reference: 1 ranks, DPO on Ray needs "
        r"as many as resources.actor \(2\)",
    ):
        mismatched.ray_dpo_sizes
    for fine in (
        ["resources.reference_in_actor=true"],
        ["dpo.loss_type=orpo"],
        ["resources.colocate_actor_ref=true"],
    ):
        sizes = load_config(None, [*ray, *fine]).ray_dpo_sizes
        assert sizes.world == 2 and sizes.reference_group == (fine[0].startswith("resources.c"))


def test_load_with_a_job_checks_and_derives_its_sizes(monkeypatch):
    bad_ppo = ["rollout.rollout_batch_size=6", "ppo.mini_batch_size=4"]
    load_config(None, bad_ppo)  # no job: any job's config loads
    with pytest.raises(ConfigError, match="^ppo.mini_batch_size: 4 does not divide"):
        load_config(None, bad_ppo, job="ppo")
    assert load_config(None, [], job="ppo").train.gradient_accumulation_steps is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert load_config(None, [], job="sft").train.gradient_accumulation_steps == 8 // (2 * 2)
    with pytest.raises(ConfigError, match="^data.max_prompt_length: 256 must be smaller"):
        load_config(None, ["data.max_prompt_length=256"], job="dpo")
    load_config(None, ["data.max_prompt_length=256"], job="ppo")  # prompts only
    ray = ["dpo.mode=ray", "resources.actor.devices_per_node=2"]
    with pytest.raises(ConfigError, match="^resources.reference: 1 ranks"):
        load_config(None, ray, job="dpo")  # dpo with dpo.mode=ray is DPO on Ray
    cfg = load_config(None, [*ray, "resources.reference.devices_per_node=2"], job="dpo")
    assert cfg.train.gradient_accumulation_steps == 8 // (2 * 2)  # the actor's 2 ranks

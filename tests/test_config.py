"""Config: YAML + overrides, typed values, and errors that name the culprit."""

import subprocess
import sys

import pytest
import yaml

from rlhf_dist.config import ConfigError, load_config, resolve_ppo_sizes, save_config, to_yaml


def _error(overrides, path=None):
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_kto_errors_name_the_key():
    kto = ["dpo.loss_type=kto"]
    assert _error(kto + ["train.micro_batch_size=1", "train.train_batch_size=4"]) == (
        "train.micro_batch_size: is 1; dpo.loss_type=kto estimates KL from the mismatched "
        "pairs of a micro-batch (each row's prompt with another row's answer) and needs >= 2"
    )
    assert _error(kto + ["train.eval_batch_size=1"]).startswith("train.eval_batch_size: is 1;")
    assert _error(kto + ["dpo.precompute_ref=true"]).startswith(
        "dpo.precompute_ref: dpo.loss_type=kto pairs each row with another row of its micro-batch"
    )
    assert _error(kto + ["dpo.nll_coef=0.1"]).startswith("dpo.nll_coef: is for pairs")
    assert _error(kto + ["dpo.kto_balance=0"]).startswith("dpo.kto_balance: must be > 0")
    assert _error(kto + ["dpo.kto_balance=1.2", "dpo.kto_desirable_weight=2"]).startswith(
        "dpo.kto_desirable_weight: is set from the data by dpo.kto_balance"
    )
    assert _error(kto + ["dpo.kto_undesirable_weight=-1"]).startswith("dpo.kto_undesirable_weight:")
    cfg = load_config(None, kto + ["dpo.kto_balance=1.2"])
    assert cfg.dpo.unpaired and cfg.dpo.needs_reference


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.5\n  epochs: 3\ndeepspeed:\n  zero_stage: 2\n")
    cfg = load_config(str(path), ["train.lr=2e-5", "model.tiny.num_layers=3"])
    assert cfg.train.lr == pytest.approx(2e-5)
    assert cfg.train.epochs == 3
    assert cfg.deepspeed.zero_stage == 2
    assert cfg.model.tiny.num_layers == 3
    assert cfg.data.path == "toy"  # untouched default


def test_unknown_key_names_key_and_closest_valid_one():
    msg = _error(["train.lrr=1"])
    assert "train.lrr" in msg and "did you mean 'train.lr'" in msg
    msg = _error(["trian.lr=1"])
    assert "trian" in msg and "did you mean 'train'" in msg
    msg = _error(["model.tiny.hidden_sise=8"])
    assert "did you mean 'model.tiny.hidden_size'" in msg


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("deepspeed:\n  zero_stge: 2\n")
    msg = _error([], str(path))
    assert "deepspeed.zero_stge" in msg and "deepspeed.zero_stage" in msg


def test_wrong_type_names_field_and_value():
    msg = _error(["train.lr=abc"])
    assert msg.startswith("train.lr:") and "'abc'" in msg
    msg = _error(["deepspeed.bf16=maybe"])
    assert "deepspeed.bf16" in msg and "maybe" in msg


def test_bad_values_name_the_field():
    assert _error(["deepspeed.zero_stage=5"]).startswith("deepspeed.zero_stage: got 5")
    assert "dpo.loss_type" in _error(["dpo.loss_type=cpo"])
    assert "ppo.dual_clip" in _error(["ppo.dual_clip=0.5"])
    assert "reward_model.tiny.hidden_size" in _error(["reward_model.tiny.hidden_size=65"])
    assert "deepspeed.offload_param" in _error(["deepspeed.offload_param=true"])
    assert "data.max_prompt_length" in _error(["data.max_prompt_length=0"])
    assert "override 'train.lr'" in _error(["train.lr"])


def test_offload_when_idle_is_per_role_and_refuses_what_deepspeed_cannot_move():
    cfg = load_config(None, ["resources.critic.offload_when_idle=true"])
    assert cfg.resources.critic.offload_when_idle and not cfg.resources.actor.offload_when_idle
    param_offload = ["deepspeed.zero_stage=3", "deepspeed.offload_param=true"]
    msg = _error([*param_offload, "resources.reward.offload_when_idle=true"])
    assert msg.startswith("resources.reward.offload_when_idle:") and "offload_param" in msg
    # the actor's own stage has no parameter offload (offload_param needs ZeRO-3)
    load_config(
        None,
        [
            *param_offload,
            "deepspeed.role_zero_stage={actor: 2}",
            "resources.actor.offload_when_idle=true",
        ],
    )
    msg = _error(["deepspeed.bf16=true", "resources.actor.offload_when_idle=true"])
    assert msg.startswith("resources.actor.offload_when_idle:") and "zero_stage>=1" in msg
    load_config(None, ["deepspeed.bf16=true", "resources.reference.offload_when_idle=true"])


def test_missing_config_file():
    assert "does-not-exist.yaml" in _error([], "does-not-exist.yaml")


def test_batch_divisibility_names_the_numbers():
    cfg = load_config(None, ["train.train_batch_size=6", "train.micro_batch_size=2"])
    with pytest.raises(ConfigError) as info:
        cfg.resolve(dp_size=2)
    msg = str(info.value)
    assert "train.train_batch_size" in msg and "6" in msg and "ranks=2" in msg


def test_derived_accumulation_computed_once_and_checked():
    cfg = load_config(None, ["train.train_batch_size=16", "train.micro_batch_size=2"])
    cfg.resolve(dp_size=2)
    assert cfg.train.gradient_accumulation_steps == 4
    bad = load_config(None, ["train.train_batch_size=16", "train.gradient_accumulation_steps=3"])
    with pytest.raises(ConfigError, match="train.gradient_accumulation_steps: 3 conflicts"):
        bad.resolve(dp_size=2)


def test_ppo_sizes():
    cfg = load_config(None, ["rollout.rollout_batch_size=6", "ppo.mini_batch_size=4"])
    with pytest.raises(ConfigError, match="ppo.mini_batch_size: 4 does not divide"):
        resolve_ppo_sizes(cfg)
    for name in ("rloo", "mean_baseline", "dr_grpo", "group_norm"):  # algo.MIN_GROUP_SIZE
        cfg = load_config(None, [f"ppo.advantage_estimator={name}"])
        with pytest.raises(
            ConfigError,
            match=f"rollout.n_samples_per_prompt: is 1; "
            f"ppo.advantage_estimator={name} .* needs >= 2",
        ):
            resolve_ppo_sizes(cfg)
    resolve_ppo_sizes(load_config(None, ["ppo.advantage_estimator=reinforce"]))


def test_grpo_family_options_checked_with_the_field_named():
    cfg = load_config(None, ["ppo.dynamic_sampling=true", "ppo.advantage_estimator=reinforce"])
    with pytest.raises(
        ConfigError, match="rollout.n_samples_per_prompt: is 1; ppo.dynamic_sampling"
    ):
        resolve_ppo_sizes(cfg)
    assert "ppo.kl_in_loss: needs ppo.kl_controller=fixed" in _error(
        ["ppo.kl_in_loss=true", "ppo.kl_controller=adaptive"]
    )
    assert "ppo.target_kl: must be > 0" in _error(["ppo.target_kl=0"])
    assert "ppo.dynamic_sampling_extra_rounds" in _error(["ppo.dynamic_sampling_extra_rounds=-1"])
    assert "ppo.reward_timeout_s: times the reward worker pool: set ppo.reward_workers" in _error(
        ["ppo.reward_timeout_s=5"]
    )
    assert (
        "ppo.reward_workers: is set but ppo.reward_fn, ppo.rewards and ppo.reward_url are empty"
        in _error(["ppo.reward_workers=2"])
    )
    assert "ppo.reward_url: must start with http:// or https://, got 'localhost:8000'" in _error(
        ["ppo.reward_url=localhost:8000"]
    )
    assert (
        load_config(
            None, ["ppo.use_reward_model=false", "ppo.reward_url=http://h:1"]
        ).ppo.reward_url
        == "http://h:1"
    )  # the served RM scores instead


def test_target_kl_stops_after_the_epoch_whose_mean_kl_passes_it():
    from rlhf_dist.trainers.ppo import past_target_kl

    epoch = [{"actor/approx_kl": 0.01}, {"actor/approx_kl": 0.05}]  # mean 0.03
    assert past_target_kl(epoch, 0.029) and not past_target_kl(epoch, 0.031)
    assert not past_target_kl(epoch, None)


def test_unknown_estimator_is_rejected():
    assert "ppo.advantage_estimator" in _error(["ppo.advantage_estimator=grpo"])


def test_print_and_save_round_trip(tmp_path):
    cfg = load_config(None, ["train.lr=3e-4", f"output_dir={tmp_path}", "logging.tags=[a,b]"])
    path = save_config(cfg)
    assert path == tmp_path / "config.yaml"
    again = load_config(str(path))
    assert again == cfg
    assert yaml.safe_load(to_yaml(cfg))["logging"]["tags"] == ["a", "b"]


def test_cli_print_config_and_errors():
    out = subprocess.run(
        [sys.executable, "-m", "rlhf_dist.cli", "sft", "--print-config", "train.lr=0.25"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["train"]["lr"] == 0.25
    bad = subprocess.run(
        [sys.executable, "-m", "rlhf_dist.cli", "sft", "trian.lr=1"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "did you mean 'train'" in bad.stderr


def test_vllm_rollout_sections():
    cfg = load_config(
        None, ["rollout.backend=vllm", "data.max_prompt_length=40", "rollout.max_new_tokens=24"]
    )
    assert cfg.resources.rollout.max_model_len == 64  # prompt + response by default
    assert cfg.resources.rollout.world_size == 1
    msg = _error(
        [
            "rollout.backend=vllm",
            "resources.rollout.max_model_len=50",
            "data.max_prompt_length=40",
            "rollout.max_new_tokens=24",
        ]
    )
    assert msg.startswith("resources.rollout.max_model_len: 50 is below") and "= 64" in msg
    assert _error(["rollout.backend=sglang"]).startswith("rollout.backend: got 'sglang'")
    assert _error(["rollout.use_engine_logprobs=true"]).startswith(
        "rollout.use_engine_logprobs: needs rollout.backend=vllm"
    )
    assert _error(["resources.colocate_rollout=true"]).startswith(
        "resources.colocate_rollout: needs rollout.backend=vllm"
    )
    assert _error(
        [
            "rollout.backend=vllm",
            "resources.colocate_rollout=true",
            "resources.rollout.num_engines=2",
        ]
    ).startswith(
        "resources.colocate_rollout: one engine per actor device, so resources.rollout."
        "num_engines must equal the actor's ranks (1)"
    )
    assert _error(["resources.rollout.num_engines=0"]).startswith(
        "resources.rollout.num_engines: must be > 0"
    )
    assert _error(["resources.rollout.gpu_memory_utilization=1.5"]).startswith(
        "resources.rollout.gpu_memory_utilization: must be in (0, 1]"
    )
    assert _error(["rollout.tis_cap=0"]).startswith("rollout.tis_cap: must be > 0")
    assert _error(["rollout.backend=vllm", "rollout.logprobs_from_generate=true"]).startswith(
        "rollout.logprobs_from_generate: needs rollout.backend=hf"
    )
    assert _error(
        ["rollout.backend=vllm", "rollout.use_engine_logprobs=true", "rollout.top_p=0.9"]
    ).startswith(
        "rollout.use_engine_logprobs: needs rollout.top_p=1 and rollout.top_k=0, got 0.9 and 0"
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["reward_model.lora.r=8"], r"reward_model.lora.r: reward_model is frozen"),
        (["ref_model.load_in_4bit=true"], r"ref_model.lora.r: ref_model is frozen"),
        (["model.load_in_4bit=true"], r"model.load_in_4bit: quantised weights cannot be trained"),
        (
            ["model.lora.r=8", "model.load_in_4bit=true", "model.load_in_8bit=true"],
            r"model.load_in_4bit: and model.load_in_8bit are both set",
        ),
        (
            ["model.lora.r=8", "model.load_in_4bit=true", "deepspeed.zero_stage=3"],
            r"model.load_in_4bit: quantised \(QLoRA\) weights cannot be partitioned by ZeRO-3",
        ),
        (
            ["model.lora.r=8", "deepspeed.zero_stage=3", "deepspeed.offload_param=true"],
            r"model.lora.r: LoRA does not work with deepspeed.offload_param",
        ),
        (
            [
                "critic_model.lora.r=8",
                "deepspeed.zero_stage=3",
                "resources.critic.offload_when_idle=true",
            ],
            r"resources.critic.offload_when_idle: does not work with critic_model.lora "
            r"under ZeRO-3",
        ),
        (
            ["model.lora.r=8", "deepspeed.zero_stage=3", "dpo.ref_offload=true"],
            r"dpo.ref_offload: there is no reference copy",
        ),
        (
            ["model.lora.r=8", "resources.colocate_actor_ref=true"],
            r"resources.colocate_actor_ref: there is no reference group",
        ),
        (
            ["model.lora.r=8", "resources.reference_in_actor=true"],
            r"resources.reference_in_actor: there is no reference copy to place",
        ),
        (["model.lora.r=-1"], r"model.lora.r"),
        (["model.lora.dropout=1.0"], r"model.lora.dropout: must be in \[0, 1\)"),
        (["model.lora.target_modules=[]"], r"model.lora.target_modules: is empty"),
    ],
)
def test_lora_combinations_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_shared_reference_needs_lora_and_no_reference_path():
    assert load_config(None, ["model.lora.r=8"]).shared_reference
    assert not load_config(None, []).shared_reference
    assert not load_config(
        None, ["model.lora.r=8", "ref_model.name_or_path=/models/base"]
    ).shared_reference
    from rlhf_dist.config import ppo_roles

    assert ppo_roles(load_config(None, ["model.lora.r=8"])) == ["actor", "reward", "critic"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["resources.colocate_actor_ref=true"],
            r"resources.colocate_actor_ref: there is no reference group to colocate",
        ),
        (
            ["resources.reference.offload_when_idle=true"],
            r"resources.reference.offload_when_idle: there is no reference group.*"
            r"resources.actor.offload_when_idle offloads both",
        ),
    ],
)
def test_reference_in_actor_refuses_the_reference_groups_keys(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["resources.reference_in_actor=true", *overrides])


def test_reference_in_actor_creates_no_reference_group():
    from rlhf_dist.config import ppo_roles

    cfg = load_config(None, ["resources.reference_in_actor=true"])
    assert not cfg.reference_group and not cfg.shared_reference
    assert ppo_roles(cfg) == ["actor", "reward", "critic"]
    assert load_config(None, []).reference_group


def test_quantised_base_needs_cuda():
    import torch

    from rlhf_dist.models import ModelError, hf_load_kwargs

    if torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without CUDA")
    cfg = load_config(None, ["model.lora.r=8", "model.load_in_4bit=true"])
    with pytest.raises(
        ModelError,
        match=r"model.load_in_4bit: quantised weights "
        r"\(bitsandbytes\) need a CUDA device",
    ):
        hf_load_kwargs(cfg.model, "model")


def test_unknown_key_inside_a_list_entry_names_its_index(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"^ppo.rewards\[1\].wieght: unknown key in "
        r"ppo.rewards\[1\]; did you mean "
        r"'ppo.rewards\[1\].weight'\? \(valid: fn, weight, args\)",
    ):
        load_config(None, ["ppo.rewards=[{fn: math}, {fn: exact_match, wieght: 1}]"])
    path = tmp_path / "x.yaml"
    path.write_text("ppo:\n  rewards:\n    - {fn: math, wieght: 2}\n")
    with pytest.raises(ConfigError, match=r"^ppo.rewards\[0\].wieght: unknown key"):
        load_config(str(path))


def test_batches_are_length_grouped_by_default_but_not_for_the_ppo_starts():
    """DPO/SFT/RM group batches by length unless told not to; the tiny SFT and RM configs
    (the PPO tests' and the demo's starting models) keep the plain order they were tuned on."""
    from pathlib import Path

    tiny = Path(__file__).parents[1] / "configs" / "tiny"
    assert load_config(None).train.group_by_length is True
    assert load_config(str(tiny / "dpo.yaml")).train.group_by_length is True
    for name in ("sft.yaml", "rm.yaml"):
        assert load_config(str(tiny / name)).train.group_by_length is False, name

"""Fast tests of the pure pieces of the Ray drivers (no Ray started): the learners' optimiser
section, custom reward functions, PPO size validation, the weights checksum."""

from __future__ import annotations

import zlib

import pytest
import torch

from rlhf_dist.config import ConfigError, load_config
from rlhf_dist.rewards import RewardError, load_rewards
from rlhf_dist.trainers.ppo import learner_train_section
from rlhf_dist.utils.checksum import state_checksum

from ray_helpers import CONFIGS


def ppo_cfg(*overrides: str):
    return load_config(str(CONFIGS / "ppo.yaml"), list(overrides))


def test_learner_train_section_one_step_per_minibatch():
    cfg = ppo_cfg(
        "ppo.mini_batch_size=16",
        "train.micro_batch_size=4",
        "train.lr=3e-4",
        "train.lr_scheduler=cosine",
        "train.warmup_ratio=0.1",
    )
    train = learner_train_section(cfg, 7e-5, world_size=2)
    # 16 rows per optimiser step = 4 per micro-batch × 2 accumulation steps × 2 ranks
    assert (train.train_batch_size, train.micro_batch_size, train.gradient_accumulation_steps) == (
        16,
        4,
        2,
    )
    assert train.lr == 7e-5 and train.lr_scheduler == "constant" and train.warmup_ratio == 0.0
    assert cfg.train.lr == 3e-4 and cfg.train.gradient_accumulation_steps is None  # untouched
    assert learner_train_section(cfg, 1e-4, world_size=1).gradient_accumulation_steps == 4


def test_learner_train_section_names_the_sizes_that_do_not_divide():
    cfg = ppo_cfg("ppo.mini_batch_size=12", "train.micro_batch_size=4")
    with pytest.raises(
        ConfigError,
        match=r"train\.train_batch_size: 12 is not divisible by "
        r"train\.micro_batch_size=4 × data-parallel ranks=2",
    ):
        learner_train_section(cfg, 1e-4, world_size=2)


def test_load_rewards_resolves_functions_and_weights():
    cfg = ppo_cfg(
        "ppo.reward_fn=rlhf_dist.rlaif.judges:toy_rule_judge",
        "ppo.reward_fn_weight=2",
        "ppo.rewards=[{fn: exact_match, weight: 0.5, args: {ignore_case: true}}]",
    )
    rewards = load_rewards(cfg.ppo, label_key="answer")
    assert [(f.name, f.weight, f.field, f.takes_labels) for f in rewards.functions] == [
        ("rlhf_dist.rlaif.judges:toy_rule_judge", 2.0, "ppo.reward_fn", False),
        ("exact_match", 0.5, "ppo.rewards[0].fn", True),
    ]
    assert not load_rewards(ppo_cfg().ppo)


@pytest.mark.parametrize(
    "override, message",
    [
        ("ppo.reward_fn=no_colon_here", "^ppo.reward_fn 'no_colon_here': expected a built-in"),
        ("ppo.reward_fn=:fn", "^ppo.reward_fn ':fn': expected a built-in"),
        (
            "ppo.reward_fn=no_such_module_xyz:fn",
            "^ppo.reward_fn 'no_such_module_xyz:fn': cannot import module 'no_such_module_xyz'",
        ),
        (
            "ppo.rewards=[{fn: math}, {fn: os.path:no_such_function}]",
            r"^ppo.rewards\[1\].fn 'os.path:no_such_function': module 'os.path' has no attribute",
        ),
    ],
)
def test_load_rewards_errors_name_the_field(override, message):
    with pytest.raises(RewardError, match=message):
        load_rewards(ppo_cfg(override).ppo, label_key="answer")


def test_a_verifier_without_a_label_column_is_refused_naming_the_key():
    with pytest.raises(
        RewardError,
        match=r"^ppo.rewards\[0\].fn: 'math' compares each "
        r"response with its prompt's label: set "
        r"data.label_key",
    ):
        load_rewards(ppo_cfg("ppo.rewards=[{fn: math}]").ppo, label_key=None)


SIZES = ("rollout.rollout_batch_size=16", "ppo.mini_batch_size=8")  # fixed here, whatever
# configs/tiny/ppo.yaml is tuned to


def resolve(*overrides: str):
    from rlhf_dist.config import resolve_ppo_sizes

    resolve_ppo_sizes(ppo_cfg(*SIZES, *overrides))


def test_resolve_ppo_sizes_accepts_the_tiny_config():
    resolve()  # 16 sequences; minibatch 8; actor 2 ranks × micro 4


@pytest.mark.parametrize(
    "overrides, field, detail",
    [
        (
            ("ppo.mini_batch_size=6",),
            "ppo.mini_batch_size",
            "6 does not divide rollout.rollout_batch_size × rollout.n_samples_per_prompt = 16 × 1",
        ),
        (
            ("ppo.mini_batch_size=4",),
            "ppo.mini_batch_size",
            "4 is not divisible by resources.actor ranks=2 × train.micro_batch_size=4",
        ),
        (
            ("resources.reward.devices_per_node=3",),
            "resources.reward",
            "3 ranks × train.micro_batch_size=4 do not divide the 16 sequences",
        ),
        (
            (
                "resources.actor.devices_per_node=1",
                "resources.critic.devices_per_node=2",
                "ppo.mini_batch_size=4",
            ),
            "ppo.mini_batch_size",
            "4 is not divisible by resources.critic ranks=2 × train.micro_batch_size=4",
        ),
        (
            ("resources.colocate_actor_ref=true",),
            "resources.colocate_actor_ref",
            "colocated roles need the same resources",
        ),
        (
            ("ppo.advantage_estimator=group_norm",),
            "rollout.n_samples_per_prompt",
            "ppo.advantage_estimator=group_norm compares samples of one prompt and needs >= 2",
        ),
    ],
)
def test_resolve_ppo_sizes_errors_name_the_field(overrides, field, detail):
    with pytest.raises(ConfigError) as err:
        resolve(*overrides)
    message = str(err.value)
    assert message.startswith(f"{field}: ") and detail in message, message


def test_critic_free_runs_need_no_critic_group():
    from rlhf_dist.config import ppo_roles

    assert ppo_roles(ppo_cfg()) == ["actor", "reference", "reward", "critic"]
    assert ppo_roles(
        ppo_cfg("ppo.advantage_estimator=group_norm", "rollout.n_samples_per_prompt=2")
    ) == ["actor", "reference", "reward"]


def test_state_checksum_is_crc32_of_raw_bytes_in_name_order():
    a = torch.tensor([1.0, -2.5], dtype=torch.float32)
    b = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()  # not contiguous
    scalar = torch.tensor(3.0)
    state = {"z": a, "b": b, "s": scalar}
    crc = 0
    for t in (b, scalar, a):  # sorted names: b, s, z
        crc = zlib.crc32(t.contiguous().numpy().tobytes(), crc)
    assert state_checksum(state) == float(crc)
    flipped = a.clone()
    flipped.view(torch.int32)[0] ^= 1  # one bit of one weight
    assert state_checksum({**state, "z": flipped}) != state_checksum(state)

"""Worker groups in this process, on a private local Ray started for this module.

* Role groups give their resources back: ``create_roles`` → ``stop`` frees every placement
  group (the actor group below needs those CPUs), and a placement that cannot be satisfied
  fails after ``resources.timeout_s`` with Ray's verdict.
* Greedy generation with the parameters sharded by ZeRO-3 over the actor group's 2 ranks
  (gathered for ``generate``) gives exactly the tokens of the unsharded model in this process.
* Faults reach the driver as :class:`WorkerError` naming the role and the rank, never a hang:
  a worker that raises (a real input check), a rank that stops answering (SIGSTOP: the group's
  wait limit fires), and a rank killed.

Tests run in file order; the fault test runs last: it leaves the actor group broken.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from ray_helpers import CONFIGS

pytestmark = pytest.mark.slow

PROMPTS, NEW_TOKENS = 8, 12


@pytest.fixture(scope="module")
def cfg(tiny_model_dir, tmp_path_factory):
    from rlhf_dist.config import load_config

    return load_config(
        str(CONFIGS / "ppo.yaml"),
        [
            f"output_dir={tmp_path_factory.mktemp('group')}",
            f"model.name_or_path={tiny_model_dir}",
            "rollout.do_sample=false",
            f"rollout.max_new_tokens={NEW_TOKENS}",
            "resources.timeout_s=180",
            "logging.backend=none",
        ],
    )


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from rlhf_dist.workers.cluster import start_ray

    started = start_ray(None, num_cpus=2)
    yield
    if started:
        ray.shutdown()


def free_cpus(expected: float, wait_s: float = 20.0) -> float:
    """Ray's free CPUs once they reach ``expected`` (resource updates are asynchronous)."""
    import ray

    deadline = time.monotonic() + wait_s
    while True:
        free = ray.available_resources().get("CPU", 0.0)
        if free == expected or time.monotonic() > deadline:
            return free
        time.sleep(0.2)


def test_roles_are_placed_and_give_their_resources_back(local_ray, cfg):
    import dataclasses

    import ray

    from rlhf_dist.config import RoleResources
    from rlhf_dist.workers.cluster import create_roles, stop
    from rlhf_dist.workers.worker_group import WorkerError, make_placement

    total = ray.cluster_resources()["CPU"]
    half = RoleResources(num_nodes=1, devices_per_node=2, cpus_per_worker=0.5)
    small = dataclasses.replace(
        cfg,
        resources=dataclasses.replace(
            cfg.resources, actor=half, reference=dataclasses.replace(half, devices_per_node=1)
        ),
    )
    roles = create_roles(small, with_reward=False, with_critic=False)
    try:
        assert roles.placement_metrics() == {
            "placement/actor_nodes": 1.0,
            "placement/reference_nodes": 1.0,
        }
        where = roles.actor.locations() + roles.reference.locations()
        assert len({w["pid"] for w in where}) == 3 and len({w["node_id"] for w in where}) == 1
        assert free_cpus(total - 1.5) == total - 1.5
    finally:
        stop(roles, started_ray=False)
    assert free_cpus(total) == total
    assert all(pg["state"] == "REMOVED" for pg in ray.util.placement_group_table().values())

    too_big = RoleResources(num_nodes=1, devices_per_node=1, cpus_per_worker=total + 1)
    with pytest.raises(
        WorkerError,
        match=r"test-big: placement of 1 bundles .* not possible "
        r"within 2s \(resources.timeout_s; Ray says INFEASIBLE",
    ):
        make_placement(too_big, "PACK", "test-big", timeout_s=2)


@pytest.fixture(scope="module")
def actor_group(local_ray, cfg):
    """ActorGroup of configs/tiny/ppo.yaml's actor (2 ranks, ZeRO-3), built."""
    from rlhf_dist.trainers.ppo import learner_train_section
    from rlhf_dist.workers.worker_group import make_placement
    from rlhf_dist.workers.role_groups import ActorGroup
    from rlhf_dist.workers.role_workers import ActorWorker
    from ray.util.placement_group import remove_placement_group

    assert cfg.resources.actor.world_size == 2 and cfg.deepspeed.for_role("actor").zero_stage == 3
    res = cfg.resources
    pg = make_placement(res.actor, res.placement_strategy, "test-actor", res.timeout_s)
    group = ActorGroup("actor", ActorWorker, res.actor, pg, (cfg,), res.timeout_s)
    try:
        group.build(learner_train_section(cfg, cfg.train.lr, res.actor.world_size), 1).result()
        yield group
    finally:
        group.kill()
        remove_placement_group(pg)


@pytest.fixture(scope="module")
def tokenizer(cfg):
    from rlhf_dist.models import load_tokenizer

    return load_tokenizer(cfg.model)


@pytest.fixture(scope="module")
def prompts(cfg, tokenizer):
    """The first toy training prompts, left-padded as the PPO driver collates them."""
    from rlhf_dist.data import PromptCollator, build_prompt_dataset
    from rlhf_dist.protocol import Batch

    data = build_prompt_dataset(cfg.data, tokenizer, split="train")
    rows = [data[i] for i in range(PROMPTS)]
    batch = Batch.from_dict(PromptCollator(tokenizer.pad_token_id)(rows))
    batch = batch.select(["input_ids", "attention_mask"])
    assert (batch["attention_mask"] == 0).any(), "want prompts of different lengths"
    return batch


def unsharded_rollout(cfg, tokenizer, prompts):
    from rlhf_dist.models import load_causal_lm
    from rlhf_dist.rollout import HFGenerator

    model = load_causal_lm(cfg.model, tokenizer)
    engine = HFGenerator(model, tokenizer, cfg.rollout)
    return engine.generate(
        prompts["input_ids"], prompts["attention_mask"], generator_seed=0, with_logprobs=True
    )


def test_zero3_greedy_generation_matches_unsharded_model(actor_group, cfg, tokenizer, prompts):
    sharded = actor_group.generate(prompts, seed=0, pad_token_id=tokenizer.pad_token_id)
    expected = unsharded_rollout(cfg, tokenizer, prompts)
    assert sharded.meta["prompt_length"] == expected.meta["prompt_length"]
    assert torch.equal(sharded["sequences"], expected["sequences"])
    assert torch.equal(sharded["attention_mask"], expected["attention_mask"])
    assert torch.equal(sharded["action_mask"], expected["action_mask"])
    torch.testing.assert_close(
        sharded["old_logprobs"], expected["old_logprobs"], atol=1e-5, rtol=1e-5
    )
    # not a degenerate comparison: real new tokens, and not the same response for every prompt
    P = expected.meta["prompt_length"]
    responses = {tuple(row.tolist()) for row in expected["sequences"][:, P:]}
    assert expected["sequences"].shape[1] > P and len(responses) > 1


def test_nonfinite_loss_on_a_worker_names_role_rank_and_tensor(actor_group, tokenizer, prompts):
    """A NaN advantage makes the PPO loss NaN on every rank: both ranks agree before backward
    (none waits in a collective), the driver gets a NonFiniteError naming the role and rank,
    and the weights are untouched (no backward, no step), so the group keeps working."""
    from rlhf_dist.algo import NonFiniteError

    pad = tokenizer.pad_token_id
    experience = actor_group.generate(prompts, seed=0, pad_token_id=pad)
    advantages = torch.full_like(experience["old_logprobs"], float("nan"))
    minibatch = experience.with_(advantages=advantages)
    with pytest.raises(
        NonFiniteError,
        match=r"^actor rank [01]: non-finite loss \(nan here\) "
        r"on ranks \[0, 1\] of 2",
    ):
        actor_group.ppo_learner(minibatch, len(minibatch), 1, 0).epoch(0).result()
    again = actor_group.generate(prompts, seed=0, pad_token_id=pad)
    assert torch.equal(again["old_logprobs"], experience["old_logprobs"])


def test_worker_faults_name_role_and_rank(actor_group, tokenizer, prompts):
    import ray

    from rlhf_dist.workers.worker_group import WorkerError, WorkerLost

    pad = tokenizer.pad_token_id
    before = actor_group.generate(prompts, seed=0, pad_token_id=pad)

    # 1. Both ranks raise on a real input check (prompts with no real token): the error names
    #    the role and the rank whose failure arrived first; the group is still usable after.
    empty = prompts.with_(attention_mask=torch.zeros_like(prompts["attention_mask"]))
    with pytest.raises(
        WorkerError,
        match=r"^actor rank [01] failed: ValueError: prompt rows \[0, 1, 2, 3\] have no real "
        r"token",
    ) as info:
        actor_group.generate(empty, seed=0, pad_token_id=pad)
    assert not isinstance(info.value, WorkerLost)  # a raising worker is not a lost one
    assert "ray::" not in str(info.value)  # the worker's message, not Ray's actor repr
    again = actor_group.generate(prompts, seed=0, pad_token_id=pad)
    assert torch.equal(again["sequences"], before["sequences"])

    # 2. Rank 1 stops answering (SIGSTOP): rank 0 waits in the ZeRO-3 all-gather, and the
    #    driver gives up after the group's wait limit (resources.timeout_s, lowered here)
    #    naming the ranks that did not answer.
    pids = [where["pid"] for where in actor_group.locations()]
    actor_group.timeout_s = 8
    os.kill(pids[1], signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(WorkerLost, match=r"actor ranks \[0, 1\]: no answer within 8s"):
            actor_group.generate(prompts, seed=0, pad_token_id=pad)
        assert time.monotonic() - start < 8 + 30
    finally:
        os.kill(pids[1], signal.SIGCONT)

    # 3. Rank 1 killed: the next call fails at once naming the dead rank, although rank 0's
    #    part of the call is left waiting in the collective for it.
    actor_group.timeout_s = 120
    ray.kill(actor_group.workers[1], no_restart=True)
    start = time.monotonic()
    with pytest.raises(WorkerLost, match=r"actor rank 1 died: ActorDiedError"):
        actor_group.generate(prompts, seed=0, pad_token_id=pad)
    assert time.monotonic() - start < 60

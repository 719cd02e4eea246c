"""DPO on the Ray actor group, run on a simulated 2-node Ray cluster with SPREAD placement,
against launcher DPO (the DeepSpeed launcher, 2 CPU ranks) on the same data, seed, start
model and ZeRO-3:

* placement: the actor's and the reference's 2 ranks each run on both nodes, and the job
  still trains (loss falls, the policy moved, the reference did not);
* equivalence: the two modes log the same losses and eval metrics, step by step, and export
  the same policy -- the Ray run on padding-free batches (``train.padding_free``), the
  launcher run on padded ones;
* recovery: DPO on Ray (one node) whose actor rank is SIGKILLed after step 1 rebuilds its
  groups from the step-1 checkpoint by itself and still ends with the launcher's results.

Token authentication: this machine has ``~/.ray/auth_token``.  The cluster here is started by
``ray.cluster_utils`` in the test process and the CLI driver joins it with the same
environment, which works without ``RAY_AUTH_MODE`` (checked: ``ray.init(address=…)`` from a
subprocess connects).  Against a cluster started by ``ray start`` with token auth, the driver
needs ``RAY_AUTH_MODE=token`` (see launch/README.md); job_env passes it through when set.
"""

from __future__ import annotations

import pytest
import yaml

import signal

import psutil

from ray_helpers import (
    cli,
    file_checksum,
    launcher,
    load_tensors,
    max_abs_diff,
    restarts_logged,
    rows_at,
    run_with,
    two_node_cluster,
    wait_for,
    worker_pid,
)

pytestmark = pytest.mark.slow

STEPS = 4
COMPARED = ("train/loss", "train/dpo_loss", "train/reward_margin", "train/chosen_logp")
EVAL_COMPARED = ("eval/loss", "eval/reward_accuracy", "eval/reward_margin")


def dpo_overrides(model_dir) -> tuple:
    return (
        f"model.name_or_path={model_dir}",
        "deepspeed.zero_stage=3",
        f"train.max_steps={STEPS}",
        "train.eval_every=2",
    )


@pytest.fixture(scope="module")
def ray_dpo_run(tiny_model_dir, tmp_path_factory):
    """``rlhf-dist dpo dpo.mode=ray``: actor and reference groups of 2 ranks each, SPREAD, the
    driver joining a 2-node cluster (2 CPUs per node: one rank of each role per node), on
    padding-free batches (the launcher run it is compared with pads them)."""
    out = tmp_path_factory.mktemp("dpo") / "ray"
    with two_node_cluster(num_cpus=2) as cluster:
        run = cli(
            "dpo",
            "dpo",
            out,
            *dpo_overrides(tiny_model_dir),
            "dpo.mode=ray",
            "train.padding_free=true",
            "resources.actor.devices_per_node=2",
            "resources.reference.devices_per_node=2",
            "resources.placement_strategy=SPREAD",
            f"resources.ray_address={cluster.address}",
            "resources.timeout_s=300",
        )
    return run.check()


@pytest.fixture(scope="module")
def launcher_dpo_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpo") / "launcher"
    return launcher("dpo", "dpo", out, *dpo_overrides(tiny_model_dir), nprocs=2).check()


@pytest.fixture(scope="module")
def recovered_dpo_run(tiny_model_dir, tmp_path_factory):
    """DPO on Ray with ``resources.max_restarts=1``: an actor rank SIGKILLed once step 1 is
    logged (its checkpoint written first); the kill lands in step 2..4 or the final
    eval/save/export, all of which the driver recovers from by itself."""
    out = tmp_path_factory.mktemp("dpo") / "recovered"

    def kill_an_actor_rank(driver: int) -> None:
        wait_for(lambda: rows_at(out, 1, "train/loss"), "step 1")
        psutil.Process(worker_pid(driver, "ActorWorker")).send_signal(signal.SIGKILL)

    run = run_with(
        out,
        (
            *dpo_overrides(tiny_model_dir),
            "dpo.mode=ray",
            "checkpoint.save_every=1",
            "resources.max_restarts=1",
            "resources.timeout_s=120",
        ),
        kill_an_actor_rank,
        "dpo",
        "dpo",
    )
    return run.check()


def test_spread_group_spans_both_nodes_and_trains(ray_dpo_run, tiny_model_dir):
    run = ray_dpo_run
    assert run.last("placement/actor_nodes") == 2.0
    assert run.last("placement/reference_nodes") == 2.0
    # step 1 is log 2 with a zero margin (policy = reference); later steps are on new
    # (length-grouped) batches, after updates; eval after steps 2 and 4 on held-out pairs
    # (measured: losses 0.693, 0.709, 0.554, 0.489; reward margins 0, -0.03, 0.32, 0.51;
    # eval margin 0.18 -> 0.26, eval loss 0.618 -> 0.590)
    losses, margins = run.series("train/loss"), run.series("train/reward_margin")
    assert len(losses) == STEPS and losses[0] == pytest.approx(0.6931472, abs=1e-6)
    assert margins[0] == pytest.approx(0.0, abs=1e-6) and margins[-1] > 0.2, margins
    assert sum(losses[1:]) / (STEPS - 1) < losses[0] - 0.03, losses
    eval_margins, eval_losses = run.series("eval/reward_margin"), run.series("eval/loss")
    assert 0 < eval_margins[0] < eval_margins[-1], eval_margins
    assert eval_losses[-1] < eval_losses[0] < losses[0], eval_losses
    diffs = max_abs_diff(load_tensors(run.out / "model"), load_tensors(tiny_model_dir))
    assert sum(d > 1e-6 for d in diffs.values()) >= len(diffs) // 2, diffs
    # the frozen reference: CRC32 of its full weights unchanged, equal to the start model's file
    assert (
        run.last("ref/checksum_start")
        == run.last("ref/checksum_end")
        == file_checksum(tiny_model_dir)
    )


def test_dpo_on_ray_matches_launcher_dpo(ray_dpo_run, launcher_dpo_run):
    layouts = [
        yaml.safe_load((run.out / "config.yaml").read_text())["dpo"]["layout"]
        for run in (ray_dpo_run, launcher_dpo_run)
    ]
    assert layouts == ["packed", "shared_prompt"]  # padding-free on Ray, padded rows here
    for key in COMPARED:
        ray_values = ray_dpo_run.by_step(key)
        launcher_values = launcher_dpo_run.by_step(key)
        assert sorted(ray_values) == list(range(1, STEPS + 1))
        for step in ray_values:
            assert ray_values[step] == pytest.approx(launcher_values[step], abs=1e-5), (key, step)
    for key in EVAL_COMPARED:  # every 2 steps and at the end, on the eval split
        ray_values = ray_dpo_run.by_step(key)
        launcher_values = launcher_dpo_run.by_step(key)
        assert sorted(ray_values) == sorted(launcher_values) == [2, STEPS], key
        for step in ray_values:
            assert ray_values[step] == pytest.approx(launcher_values[step], abs=1e-5), (key, step)
    diffs = max_abs_diff(
        load_tensors(ray_dpo_run.out / "model"), load_tensors(launcher_dpo_run.out / "model")
    )
    assert max(diffs.values()) < 1e-5, diffs


def test_dpo_on_ray_recovers_a_lost_rank_with_the_launcher_results(
    recovered_dpo_run, launcher_dpo_run
):
    run = recovered_dpo_run
    assert restarts_logged(run.out) == 1 and "actor rank" in run.log
    for key in COMPARED:
        got, want = run.by_step(key), launcher_dpo_run.by_step(key)
        assert run.series(key) == [got[s] for s in range(1, STEPS + 1)]  # each step once
        for step in got:
            assert got[step] == pytest.approx(want[step], abs=1e-5), (key, step)
    diffs = max_abs_diff(
        load_tensors(run.out / "model"), load_tensors(launcher_dpo_run.out / "model")
    )
    assert max(diffs.values()) < 1e-5, diffs

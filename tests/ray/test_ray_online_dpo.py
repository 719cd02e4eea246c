"""Online DPO on Ray (``rlhf-dist online-dpo``, configs/tiny/online_dpo.yaml) from the toy SFT
policy and RM, in one run that loses its actor rank once: the RM's reward of the sampled
answers rises, each prompt's best/worst pair or tie is counted, the first step is DPO's ln 2
against the reference (in the actor's process), the frozen models stay frozen; the lost worker
is recovered from the iteration-RESUME checkpoint by the job itself and the iterations it redoes
give the numbers they gave before the fault (the exact resume); bad input is named before Ray
starts."""

from __future__ import annotations

import json
import signal

import psutil
import pytest

from rlhf_dist import cli as rlhf_cli
from ray_helpers import CONFIGS, models, restarts_logged, rows_at, run_with, wait_for, worker_pid

ITERATIONS, RESUME, KILL_AFTER = 20, 10, 13
PROMPTS = 16  # rollout.rollout_batch_size of the config: one pair (or tie) per prompt
KEYS = ("reward/score_mean", "train/dpo_loss", "train/reward_margin", "online/pairs")


def logged_rows(out):
    """The rows of ``metrics.jsonl`` so far (a line being written is left out)."""
    rows = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


@pytest.fixture(scope="module")
def online_run(toy_models, tmp_path_factory):
    """The run, its actor rank SIGKILLed once iteration KILL_AFTER is logged, and the rows
    it had logged by then (the recovery rewinds the history to the checkpoint)."""
    out = tmp_path_factory.mktemp("online_dpo") / "run"
    before = []

    def kill_the_actor(driver: int) -> None:
        wait_for(lambda: rows_at(out, KILL_AFTER), f"iteration {KILL_AFTER}")
        before.extend(logged_rows(out))
        psutil.Process(worker_pid(driver, "ActorWorker")).send_signal(signal.SIGKILL)

    run = run_with(
        out,
        (
            *models(toy_models),
            f"ppo.iterations={ITERATIONS}",
            f"checkpoint.save_every={RESUME}",
            "resources.max_restarts=1",
        ),
        kill_the_actor,
        job="online-dpo",
        config="online_dpo",
    ).check()
    return run, before


@pytest.mark.slow
def test_online_dpo_raises_the_rm_reward_of_sampled_answers(online_run):
    run, _ = online_run
    rewards = [v for _, v in sorted(run.by_step("reward/score_mean").items())]
    assert len(rewards) == ITERATIONS
    # measured (seed 42): mean of the last 5 minus the first 5 iterations +0.68
    gain = sum(rewards[-5:]) / 5 - sum(rewards[:5]) / 5
    assert gain >= 0.3, rewards
    pairs, ties = run.by_step("online/pairs"), run.by_step("online/ties")
    assert all(pairs[s] + ties[s] == PROMPTS for s in pairs) and min(pairs.values()) > 0
    chosen, rejected = run.by_step("online/chosen_score"), run.by_step("online/rejected_score")
    assert all(chosen[s] > rejected[s] for s in chosen)
    # iteration 1: the policy is the reference, so DPO's loss is ln 2 exactly
    assert run.by_step("train/dpo_loss")[1] == pytest.approx(0.6931472, abs=1e-6)
    assert run.last("resources/reference_in_actor") == 1.0
    for role in ("reference", "reward"):
        assert run.last(f"frozen/{role}_checksum_start") == run.last(f"frozen/{role}_checksum_end")
    assert (run.out / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_a_lost_actor_is_recovered_from_the_checkpoint_with_the_same_numbers(online_run):
    run, before = online_run
    assert restarts_logged(run.out) == 1 and "actor rank 0 died" in run.log
    faults = [row for row in run.metrics if "fault/restarts" in row]
    assert [row["step"] for row in faults] == [RESUME]  # back to the checkpoint
    redone = range(RESUME + 1, KILL_AFTER + 1)  # logged before the fault and again after
    for key in KEYS:
        first = {row["step"]: row[key] for row in before if key in row}
        again = run.by_step(key)
        assert [again[s] for s in redone] == pytest.approx([first[s] for s in redone], abs=1e-5), (
            key
        )
    assert sorted(run.by_step("reward/score_mean")) == list(range(1, ITERATIONS + 1))


def test_bad_input_is_named_before_ray_starts(capsys):
    config = ["-c", str(CONFIGS / "online_dpo.yaml"), "--print-config"]
    assert rlhf_cli.main(["online-dpo", *config, "rollout.n_samples_per_prompt=1"]) == 2
    assert (
        "rlhf-dist online-dpo: config error: rollout.n_samples_per_prompt: is 1; online "
        "DPO pairs the best and the worst of each prompt's answers and needs >= 2"
    ) in capsys.readouterr().err
    assert rlhf_cli.main(["online-dpo", *config, "dpo.loss_type=kto"]) == 2
    assert "dpo.loss_type: kto learns from unpaired rows" in capsys.readouterr().err
    assert rlhf_cli.main(["online-dpo", *config, "train.train_batch_size=24"]) == 2
    assert (
        "train.train_batch_size: 24 pairs per optimiser step do not divide the 16 pairs"
        in capsys.readouterr().err
    )
    # the keys' docs need no valid config (the defaults sample one answer per prompt)
    assert rlhf_cli.main(["online-dpo", "--help-config"]) == 0
    shown = capsys.readouterr().out
    assert "dpo.loss_type" in shown and "ppo.reward_fn" in shown
    assert "online-dpo does not read it: online DPO takes DPO steps" in " ".join(shown.split())


@pytest.mark.slow
@pytest.mark.vllm
def test_online_dpo_samples_through_vllm_engines_synced_every_iteration(tmp_path):
    """``rollout.backend=vllm`` (random tiny models, heads of 32 for vLLM's CPU kernels): the
    engine takes the actor's weights before each iteration's sampling, and its log-probs of the
    sampled tokens are the actor's."""
    pytest.importorskip("vllm")
    from ray_helpers import cli

    heads = ("model.tiny.num_heads=2", "reward_model.tiny.num_heads=2")
    run = cli(
        "online-dpo",
        "online_dpo",
        tmp_path / "out",
        "rollout.backend=vllm",
        *heads,
        "ppo.iterations=3",
        "checkpoint.export_hf=false",
    ).check()
    assert len(run.series("perf/weight_sync_s")) == 3
    assert all(gap < 1e-3 for gap in run.series("rollout/logprob_abs_diff_max"))
    assert run.series("train/dpo_loss")[0] == pytest.approx(0.6931472, abs=1e-6)
    pairs, ties = run.series("online/pairs"), run.series("online/ties")
    assert all(p + t == PROMPTS for p, t in zip(pairs, ties))

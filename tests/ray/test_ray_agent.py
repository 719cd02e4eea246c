"""Agent RL end to end through ``rlhf-dist ppo`` (real Ray workers and DeepSpeed engines):
a user-defined environment (``tests/envs/user_envs.py``, not a built-in) named by ``env.name``
runs in a pool of Ray actors (``env.workers``), its failures on one row counted under
``env.on_error=zero_reward``; every number the driver logs is the environment's."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ray_helpers import cli, read_metrics

pytestmark = pytest.mark.slow

ENVS = Path(__file__).parents[1] / "envs"  # user_envs.py
PROMPTS = 8


def user_env_prompts(directory: Path) -> Path:
    """8 prompts, the one labelled ``broken`` (row 5) makes TwoTurnEnv raise."""
    path = directory / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Human: count to {i}\nAssistant:",
                                        "answer": "broken" if i == 5 else str(i)}) + "\n"
                            for i in range(PROMPTS)))
    return path


def test_a_user_env_in_a_ray_pool_through_a_real_job(tmp_path):
    out = tmp_path / "run"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ENVS),
                                                       os.environ.get("PYTHONPATH")]))}
    run = cli("ppo", "grpo_verifier", out, f"data.path={user_env_prompts(tmp_path)}",
              "env.name=user_envs:TwoTurnEnv", "env.workers=2", "env.on_error=zero_reward",
              "env.max_turns=3", "env.max_trajectory_tokens=64", "ppo.rewards=[]",
              "ppo.dynamic_sampling=false", "ppo.iterations=3", "rollout.rollout_batch_size=4",
              "rollout.n_samples_per_prompt=2", "rollout.max_new_tokens=6",
              "ppo.mini_batch_size=8", env=env, timeout=300).check()
    rows = [r for r in read_metrics(out) if "reward/score_mean" in r]
    assert len(rows) == 3
    broken_seen = 0.0
    for row in rows:
        failed = row["env/failed_mean"]  # the broken row's trajectories: 0 of 8, or 2 of 8
        assert failed in (0.0, 0.25)
        broken_seen += failed
        # two turns each (the failed ones fail on the second); the whole reward is the env's
        assert row["env/turns_mean"] == 2.0
        assert row["reward/score_mean"] == pytest.approx(1.25 * (1 - failed))
        assert row["env/reward_mean"] == pytest.approx(1.25 * (1 - failed))
        # the last step's info of the good trajectories: one env object per trajectory for
        # its three calls, none of them in the driver (the pool's actors)
        assert row["env/calls_mean"] == pytest.approx(3.0 * (1 - failed))
        assert row["env/in_driver_mean"] == 0.0
        # observations are context: the model's tokens are fewer than the trajectory's
        assert row["response/length_mean"] < row["env/trajectory_tokens_mean"]
    # the 8 prompts are drawn once in the first two iterations: the broken one is among them
    assert broken_seen in (0.25, 0.5)
    # zero_reward: counted, and named once with the row's prompt
    assert "env.name 'user_envs:TwoTurnEnv', row " in run.log
    assert "(prompt 'Human: count to 5 Assistant:'): step (turn 2) raised ValueError: " \
        "this row breaks the environment" in run.log

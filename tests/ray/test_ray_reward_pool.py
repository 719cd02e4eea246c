"""The reward-function pool (``ppo.reward_workers``) on a private local Ray: the same rewards
as on the driver, in row order, computed in the pool's processes; a wrong count names the
row of the whole batch; a call past ``ppo.reward_timeout_s`` stops naming the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ray_helpers import CONFIGS

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
ROWS = 7  # not a multiple of the 3 workers: chunks of 2, 2, 3


@pytest.fixture(scope="module")
def probe_log(tmp_path_factory):
    import ray

    from rlhf_dist.workers.cluster import start_ray

    log = tmp_path_factory.mktemp("pool") / "probe.log"
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "REWARD_PROBE_LOG")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), saved["PYTHONPATH"]]))
    os.environ["REWARD_PROBE_LOG"] = str(log)  # the workers inherit both from the raylet
    started = start_ray(None, num_cpus=3)
    yield log
    if started:
        ray.shutdown()
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def ppo_section(*overrides: str):
    from rlhf_dist.config import load_config

    return load_config(str(CONFIGS / "ppo.yaml"), list(overrides)).ppo


def rows():
    labels = ["a" * (i + 1) for i in range(ROWS)]  # reward of row i: i + 1
    return [f"p{i}" for i in range(ROWS)], [f"r{i}" for i in range(ROWS)], labels, [{}] * ROWS


def test_pool_gives_the_driver_rewards_in_row_order_from_its_own_processes(probe_log):
    from rlhf_dist.rewards import load_rewards
    from rlhf_dist.workers.reward_pool import RewardPool

    ppo = ppo_section(
        "ppo.reward_workers=3", "ppo.rewards=[{fn: reward_probe:label_length, weight: 2.0}]"
    )
    pool = RewardPool(ppo, label_key="answer")
    try:
        got = pool(*rows())
    finally:
        pool.kill()
    assert got.tolist() == [2.0 * (i + 1) for i in range(ROWS)]
    assert got.tolist() == load_rewards(ppo, "answer")(*rows()).tolist()  # on the driver
    calls = [line.split() for line in probe_log.read_text().splitlines()]
    pool_calls = [c for c in calls if int(c[0]) != os.getpid()]
    assert sorted(int(n) for _, n in pool_calls) == [2, 2, 3]
    assert len({pid for pid, _ in pool_calls}) == 3  # one chunk per worker process


def test_pool_errors_name_the_function_the_row_and_the_timeout(probe_log):
    from rlhf_dist.rewards import RewardError
    from rlhf_dist.workers.errors import WorkerLost
    from rlhf_dist.workers.reward_pool import RewardPool

    pool = RewardPool(
        ppo_section("ppo.reward_workers=2", "ppo.reward_fn=reward_probe:text_for_p4"), None
    )
    try:  # in the second worker's chunk (rows 3-6): the error names row 4 of the batch
        with pytest.raises(
            RewardError,
            match=r"ppo.reward_fn 'reward_probe:text_for_p4' "
            r"returned 'x' \(str\) for row 4: expected",
        ):
            pool(*rows())
    finally:
        pool.kill()
    pool = RewardPool(
        ppo_section(
            "ppo.reward_workers=2",
            "ppo.reward_timeout_s=3",
            "ppo.reward_fn=reward_probe:slow_reward",
        ),
        None,
    )
    try:
        with pytest.raises(
            WorkerLost,
            match=r"reward_fn worker ranks \[0, 1\]: no answer "
            r"within 3s \(ppo.reward_timeout_s\)",
        ):
            pool(*rows())
    finally:
        pool.kill()

"""``env.workers``: the environments of multi-turn rollouts in a pool of Ray actors
(workers/env_pool.py) on a private local Ray.  The episodes' bookkeeping stays on the driver;
each environment object lives in one worker: the same rewards as on the driver, from the
workers' processes, spread over them; an environment's exception and a hung step are named
with the row as on the driver (and counted under zero_reward); a dead worker is a WorkerLost
naming it."""
from __future__ import annotations

import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ENVS = Path(__file__).parents[1] / "envs"  # user_envs.py: the workers import it too
ROWS = [{"prompt": f"Human: row {i}\nAssistant:", "label": i} for i in range(6)]


@pytest.fixture(scope="module")
def ray_up():
    import ray

    from rlhf_dist.workers.cluster import start_ray

    saved = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(ENVS))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ENVS), saved]))
    started = start_ray(None, num_cpus=3)  # the workers inherit PYTHONPATH from the raylet
    yield
    if started:
        ray.shutdown()
    sys.path.remove(str(ENVS))
    os.environ.pop("PYTHONPATH") if saved is None else os.environ.__setitem__("PYTHONPATH", saved)


def env_section(name: str, *overrides: str):
    from rlhf_dist.config import load_config

    return load_config(None, [f"env.name=user_envs:{name}", "env.workers=2",
                              "data.max_prompt_length=32", *overrides]).env


def run_episodes(factory, actions):
    """Reset and step one episode per row, concurrently (as the rollout does)."""
    episodes = [factory.episode(row, i) for i, row in enumerate(ROWS)]

    def one(args):
        episode, action = args
        episode.reset()
        if not episode.done:
            episode.step(action)
        episode.close()
        return episode

    with ThreadPoolExecutor(6) as threads:
        return list(threads.map(one, zip(episodes, actions)))


def test_the_pool_steps_like_the_driver_in_its_own_processes(ray_up):
    from rlhf_dist.envs import EnvFactory
    from rlhf_dist.workers.env_pool import EnvPool, env_pool

    env = env_section("WhereEnv")
    assert env_pool(env_section("WhereEnv", "env.workers=0")) is None
    pool = env_pool(env)
    assert isinstance(pool, EnvPool) and pool.cpus() == 2.0
    pool.start()
    try:
        actions = ["x" * (i + 1) for i in range(len(ROWS))]
        remote = run_episodes(EnvFactory.from_config(env, host=pool), actions)
        local = run_episodes(EnvFactory.from_config(env), actions)
        assert [e.reward for e in remote] == [e.reward for e in local] == \
            [float(i + 1) for i in range(len(ROWS))]
        pids = [e.metrics()["pid"] for e in remote]
        assert os.getpid() not in pids and len(set(pids)) == 2  # keys spread over both
        assert all(pids[i] == pids[i % 2] for i in range(len(ROWS)))  # key k in worker k mod 2
        assert [e.metrics()["calls"] for e in remote] == [2.0] * len(ROWS)  # one object each
        # closed episodes are dropped from their worker
        assert [where["environments"] for where in pool.locations()] == [0, 0]
    finally:
        pool.kill()


def test_environment_errors_from_the_pool_name_the_row(ray_up):
    from rlhf_dist.envs import EnvError, EnvFactory
    from rlhf_dist.workers.env_pool import EnvPool

    env = env_section("RaisingEnv")
    pool = EnvPool(env)
    pool.start()
    try:
        episode = EnvFactory.from_config(env, host=pool).episode(ROWS[3], 3)
        episode.reset()
        with pytest.raises(EnvError) as err:
            episode.step("42")
        assert str(err.value) == ("env.name 'user_envs:RaisingEnv', row 3 (prompt 'Human: row 3 "
                                  "Assistant:'): step (turn 1) raised ValueError: cannot take "
                                  "'42'")
        # zero_reward: every trajectory ends with reward 0, counted, the pool goes on
        zero = env_section("RaisingEnv", "env.on_error=zero_reward")
        factory = EnvFactory.from_config(zero, host=pool)
        episodes = run_episodes(factory, ["a"] * len(ROWS))
        assert [(e.failed, e.reward) for e in episodes] == [(True, 0.0)] * len(ROWS)
        assert factory.stats.metrics() == {"env/trajectories": 6.0, "env/failed": 6.0}
        assert len(factory.stats.messages) == 5  # the first five kept (EnvStats)
        assert all("): step (turn 1) raised ValueError: cannot take 'a'" in message
                   for message in factory.stats.messages)
    finally:
        pool.kill()


def test_a_hung_step_times_out_in_its_worker_named_with_the_row(ray_up):
    from rlhf_dist.envs import EnvError, EnvFactory
    from rlhf_dist.workers.env_pool import EnvPool

    env = env_section("SleepyEnv", "env.step_timeout_s=1", "env.args={seconds: 20}")
    pool = EnvPool(env)
    pool.start()
    try:
        episode = EnvFactory.from_config(env, host=pool).episode(ROWS[1], 1)
        episode.reset()
        with pytest.raises(EnvError) as err:
            episode.step("a")
        assert str(err.value) == ("env.name 'user_envs:SleepyEnv', row 1 (prompt 'Human: row 1 "
                                  "Assistant:'): step (turn 1) did not return within 1 s "
                                  "(env.step_timeout_s; the call's thread is abandoned)")
    finally:
        pool.kill()


def test_a_dead_env_worker_is_a_lost_worker_naming_it(ray_up):
    from rlhf_dist.envs import EnvFactory
    from rlhf_dist.workers.env_pool import EnvPool
    from rlhf_dist.workers.errors import WorkerLost

    env = env_section("WhereEnv")
    pool = EnvPool(env)
    pool.start()
    try:
        pid = pool.locations()[1]["pid"]
        os.kill(pid, signal.SIGKILL)
        factory = EnvFactory.from_config(env, host=pool)
        episode = factory.episode(ROWS[1], 1)
        if episode.key % 2 == 0:  # key k lives in worker k mod 2: one of the next two keys
            episode = factory.episode(ROWS[1], 1)
        with pytest.raises(WorkerLost, match=r"^env worker 1 died: "):
            episode.reset()
        pool.start()  # a recovery starts a fresh pool
        episode = EnvFactory.from_config(env, host=pool).episode(ROWS[1], 1)
        assert episode.reset() == ROWS[1]["prompt"]
    finally:
        pool.kill()

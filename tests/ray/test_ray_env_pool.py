"""``env.workers``: the environments of multi-turn rollouts in a pool of Ray actors
(workers/env_pool.py) on a private local Ray, one pool of ``user_envs:ProbeEnv`` for the
module.  The episodes' bookkeeping stays on the driver; each environment object lives in one
worker: the same rewards as on the driver, from the workers' processes, spread over them; an
environment's exception and a hung step are named with the row as on the driver (and counted
under zero_reward); a dead worker is a WorkerLost naming it, and a restart brings a fresh
pool."""

from __future__ import annotations

import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ENVS = Path(__file__).parents[1] / "envs"  # user_envs.py: the workers import it too
TIMEOUT_S = 2  # env.step_timeout_s of the module's pool


def rows(label="ok", n=6):
    return [{"prompt": f"Human: row {i}\nAssistant:", "label": label} for i in range(n)]


def env_section(*overrides: str):
    from rlhf_dist.config import load_config

    return load_config(
        None,
        [
            "env.name=user_envs:ProbeEnv",
            "env.workers=2",
            f"env.step_timeout_s={TIMEOUT_S}",
            "data.max_prompt_length=32",
            *overrides,
        ],
    ).env


@pytest.fixture(scope="module")
def pool():
    import ray

    from rlhf_dist.workers.cluster import start_ray
    from rlhf_dist.workers.env_pool import env_pool

    saved = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(ENVS))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ENVS), saved]))
    started = start_ray(None, num_cpus=3)  # the workers inherit PYTHONPATH from the raylet
    pool = env_pool(env_section())
    pool.start()
    yield pool
    pool.kill()
    if started:
        ray.shutdown()
    sys.path.remove(str(ENVS))
    os.environ.pop("PYTHONPATH") if saved is None else os.environ.__setitem__("PYTHONPATH", saved)


def run_episodes(factory, batch, actions):
    """Reset and step one episode per row, concurrently (as the rollout does)."""
    episodes = [factory.episode(row, i) for i, row in enumerate(batch)]

    def one(args):
        episode, action = args
        episode.reset()
        if not episode.done:
            episode.step(action)
        episode.close()
        return episode

    with ThreadPoolExecutor(len(batch)) as threads:
        return list(threads.map(one, zip(episodes, actions)))


def test_the_pool_steps_like_the_driver_in_its_own_processes(pool):
    from rlhf_dist.envs import EnvFactory
    from rlhf_dist.workers.env_pool import EnvPool, env_pool

    assert env_pool(env_section("env.workers=0")) is None
    assert isinstance(pool, EnvPool) and pool.cpus() == 2.0
    batch, actions = rows(), ["x" * (i + 1) for i in range(6)]
    remote = run_episodes(EnvFactory.from_config(env_section(), host=pool), batch, actions)
    local = run_episodes(EnvFactory.from_config(env_section()), batch, actions)
    assert (
        [e.reward for e in remote] == [e.reward for e in local] == [float(i + 1) for i in range(6)]
    )
    pids = [e.metrics()["pid"] for e in remote]
    assert os.getpid() not in pids and len(set(pids)) == 2  # spread over both workers
    by_worker = {e.key % 2: e.metrics()["pid"] for e in remote}  # key k in worker k mod 2
    assert all(e.metrics()["pid"] == by_worker[e.key % 2] for e in remote)
    assert [e.metrics()["calls"] for e in remote] == [2.0] * 6  # one object per trajectory
    assert [where["environments"] for where in pool.locations()] == [0, 0]  # closed: dropped


def test_environment_errors_from_the_pool_name_the_row(pool):
    from rlhf_dist.envs import EnvError, EnvFactory

    episode = EnvFactory.from_config(env_section(), host=pool).episode(rows("raise")[3], 3)
    episode.reset()
    with pytest.raises(EnvError) as err:
        episode.step("42")
    assert str(err.value) == (
        "env.name 'user_envs:ProbeEnv', row 3 (prompt 'Human: row 3 "
        "Assistant:'): step (turn 1) raised ValueError: cannot take '42'"
    )
    # zero_reward: every trajectory ends with reward 0, counted; the pool goes on
    factory = EnvFactory.from_config(env_section("env.on_error=zero_reward"), host=pool)
    episodes = run_episodes(factory, rows("raise"), ["a"] * 6)
    assert [(e.failed, e.reward) for e in episodes] == [(True, 0.0)] * 6
    assert factory.stats.metrics() == {"env/trajectories": 6.0, "env/failed": 6.0}
    assert len(factory.stats.messages) == 5  # the first five kept (EnvStats)
    assert all(
        "): step (turn 1) raised ValueError: cannot take 'a'" in message
        for message in factory.stats.messages
    )
    # a hung step times out in its worker, named with the row
    episode = EnvFactory.from_config(env_section(), host=pool).episode(rows("hang")[1], 1)
    episode.reset()
    with pytest.raises(EnvError) as err:
        episode.step("a")
    assert str(err.value) == (
        "env.name 'user_envs:ProbeEnv', row 1 (prompt 'Human: row 1 "
        f"Assistant:'): step (turn 1) did not return within {TIMEOUT_S} s "
        "(env.step_timeout_s; the call's thread is abandoned)"
    )


def test_a_dead_env_worker_is_a_lost_worker_naming_it(pool):
    """Last: it kills a worker, then restarts the pool."""
    from rlhf_dist.envs import EnvFactory
    from rlhf_dist.workers.errors import WorkerLost

    os.kill(pool.locations()[1]["pid"], signal.SIGKILL)
    factory = EnvFactory.from_config(env_section(), host=pool)
    episode = factory.episode(rows()[1], 1)
    if episode.key % 2 == 0:  # key k lives in worker k mod 2: one of the next two keys
        episode = factory.episode(rows()[1], 1)
    with pytest.raises(WorkerLost, match=r"^env worker 1 died: "):
        episode.reset()
    pool.start()  # a recovery starts a fresh pool
    episode = factory.episode(rows()[1], 1)
    assert episode.reset() == rows()[1]["prompt"]

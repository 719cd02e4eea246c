"""One trajectory's environment through Episode: the contract's checks, errors naming the env
and the row, the per-call timeout, env.on_error=zero_reward, max_turns, and a user env named
``module:Class`` in the config."""

import re
import time

import pytest

import user_envs
from rlhf_dist.config import load_config
from rlhf_dist.envs import EnvError, EnvFactory, EnvStats, describe_row

ROW = {"prompt": "Human: guess my number\nAssistant:", "label": 7}
NAMED = "env.name 'user_envs:BadEnv', row 12 (prompt 'Human: guess my number Assistant:')"


def factory(env_cls, on_error="error", timeout=5.0, max_turns=4, stats=None, **args):
    return EnvFactory(
        f"user_envs:{env_cls.__name__}",
        lambda: env_cls(**args),
        max_turns,
        timeout,
        on_error,
        stats,
    )


def test_a_user_env_named_module_class_runs_through_the_config():
    cfg = load_config(
        None, ["env.name=user_envs:GuessEnv", "env.args={tries: 3}", "data.max_prompt_length=64"]
    )
    episode = EnvFactory.from_config(cfg.env).episode(ROW, 0)
    assert episode.reset() == ROW["prompt"]
    first = episode.step(" 3")
    assert first.observation == [{"role": "user", "content": "higher"}]
    assert (first.reward, first.done, first.info) == (-0.25, False, {"guesses": 1})
    assert episode.step("9").observation == [{"role": "user", "content": "lower"}]
    last = episode.step("7")
    assert (last.observation, last.reward, last.done) == (None, 1.0, True)
    assert episode.rewards == [-0.25, -0.25, 1.0] and episode.reward == 0.5
    assert episode.metrics() == {
        "turns": 3.0,
        "reward": 0.5,
        "truncated": 0.0,
        "failed": 0.0,
        "guesses": 3.0,
    }
    with pytest.raises(RuntimeError, match="the episode is over"):
        episode.step("7")


def test_max_turns_ends_the_episode_and_marks_it():
    episode = factory(user_envs.GuessEnv, max_turns=2, tries=10).episode(ROW, 0)
    episode.reset()
    assert not episode.step("1").done
    assert episode.step("2").done and episode.truncated == "max_turns"
    assert episode.metrics()["truncated"] == 1.0


def test_the_rollout_can_stop_an_episode():
    episode = factory(user_envs.GuessEnv).episode(ROW, 0)
    episode.reset()
    episode.step("1")
    episode.stop("max_trajectory_tokens")
    assert episode.done and episode.truncated == "max_trajectory_tokens"


@pytest.mark.parametrize(
    "reply, problem",
    [
        (ValueError("boom"), "step (turn 1) raised ValueError: boom"),
        (
            "just text",
            "step (turn 1) returned step returned a str, expected (observation, reward, done)",
        ),
        ((None, 1.0), "returned step returned a tuple of 2, expected"),
        ((None, "1", True), "returned the reward is '1' (str), expected a number"),
        ((None, float("nan"), True), "returned the reward is nan, expected a finite number"),
        ((None, True, True), "returned the reward is True (bool), expected a number"),
        ((None, 1.0, "yes"), "returned done is 'yes' (str), expected a bool"),
        ((None, 1.0, True, ["x"]), "returned info is a list, expected a dict"),
        (
            (42, 1.0, True),
            "returned the observation is a int, expected a string or a list of messages or None",
        ),
        (([{"role": "robot", "content": "x"}], 0.0, False), "message 0 has role 'robot'"),
        (
            ([{"role": "tool", "content": 5}], 0.0, False),
            "message 0 content is a int, not a string",
        ),
        (([], 0.0, False), "an empty message list (return None for no observation)"),
    ],
)
def test_a_broken_step_is_named_with_the_env_and_the_row(reply, problem):
    episode = factory(user_envs.BadEnv, reply=reply).episode(ROW, 12)
    episode.reset()
    with pytest.raises(EnvError) as err:
        episode.step("5")
    assert str(err.value).startswith(NAMED)
    assert problem in str(err.value)


@pytest.mark.parametrize(
    "value, problem",
    [
        (
            None,
            "reset returned the observation is a NoneType, expected a string or a list of messages",
        ),
        ("  ", "reset returned an empty prompt"),
        ([{"role": "user"}], "reset returned message 0 content is a NoneType"),
    ],
)
def test_a_broken_reset_is_named(value, problem):
    episode = factory(user_envs.BadResetEnv, value=value).episode(ROW, 3)
    with pytest.raises(EnvError, match=re.escape(problem)) as err:
        episode.reset()
    assert "user_envs:BadResetEnv', row 3 (prompt" in str(err.value)


def test_a_constructor_that_raises_is_named():
    episode = factory(user_envs.GuessEnv, nope=1).episode(ROW, 4)
    with pytest.raises(EnvError, match=r"row 4 .*: construction raised TypeError: .*nope"):
        episode.reset()


@pytest.fixture
def hang():
    """HangingEnv's steps hang until the test ends (then their threads finish)."""
    user_envs.RELEASE.clear()
    yield
    user_envs.RELEASE.set()


def test_a_hung_step_times_out_named_with_the_row(hang):
    episode = factory(user_envs.HangingEnv, timeout=0.2).episode(ROW, 5)
    episode.reset()
    start = time.monotonic()
    with pytest.raises(EnvError) as err:
        episode.step("7")
    assert time.monotonic() - start < 5
    assert (
        "user_envs:HangingEnv', row 5 (prompt 'Human: guess my number Assistant:'): "
        "step (turn 1) did not return within 0.2 s (env.step_timeout_s" in str(err.value)
    )


def test_zero_reward_counts_and_ends_the_failed_trajectories(caplog):
    stats = EnvStats()
    make = factory(
        user_envs.BadEnv, on_error="zero_reward", stats=stats, reply=RuntimeError("down")
    )
    good = factory(user_envs.GuessEnv, on_error="zero_reward", stats=stats, tries=2)
    episodes = [make.episode(ROW, i) for i in range(3)] + [good.episode(ROW, 3)]
    for episode in episodes:
        episode.reset()
    results = [episode.step("7") for episode in episodes]
    assert [r.reward for r in results] == [0.0, 0.0, 0.0, 1.0]
    assert all(r.done for r in results)
    assert [e.failed for e in episodes] == [True, True, True, False]
    assert results[0].info["env_error"].endswith("step (turn 1) raised RuntimeError: down")
    assert stats.metrics() == {"env/trajectories": 4.0, "env/failed": 3.0}
    assert len(stats.messages) == 3 and "row 1" in stats.messages[1]
    assert len([r for r in caplog.records if "zero_reward" in r.getMessage()]) == 1


def test_zero_reward_ends_a_hung_trajectory_and_counts_it(hang):
    stats = EnvStats()
    episode = factory(
        user_envs.HangingEnv, on_error="zero_reward", timeout=0.2, stats=stats
    ).episode(ROW, 8)
    episode.reset()
    result = episode.step("7")
    assert (result.reward, result.done, episode.failed) == (0.0, True, True)
    assert "row 8" in stats.messages[0] and "did not return within 0.2 s" in stats.messages[0]
    assert stats.metrics()["env/failed"] == 1.0


def test_zero_reward_zeroes_the_rewards_already_given():
    episode = factory(user_envs.GuessEnv, on_error="zero_reward", tries=5).episode(ROW, 0)
    episode.reset()
    episode.step("1")
    episode.step("not a number")  # int() raises inside the env
    assert episode.failed and episode.done and episode.reward == 0.0
    assert episode.metrics()["failed"] == 1.0


def test_zero_reward_on_reset_ends_before_the_first_turn():
    episode = factory(user_envs.BadResetEnv, on_error="zero_reward").episode(ROW, 0)
    assert episode.reset() is None and episode.done and episode.failed


def test_describe_row_shortens_the_prompt_and_reads_messages():
    long = {"prompt": "word " * 40}
    assert describe_row(1, long) == f"row 1 (prompt '{('word ' * 12)[:57]}...')"
    chat = {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}
    assert describe_row(2, chat) == "row 2 (prompt 'hi')"
    assert describe_row(3, {"label": 1}) == "row 3"

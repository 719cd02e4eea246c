"""The tool environment: calls run and answered with observations, errors counted, the final
answer scored; and the env section's checks (config-time and check_env before Ray)."""

import pytest

from rlhf_dist.config import ConfigError, EnvConfig, load_config
from rlhf_dist.data import Renderer
from rlhf_dist.envs import EnvFactory, ToolEnv, check_env

ROW = {"prompt": "Human: what is 123 + 456?\nAssistant:", "label": "579", "extras": {}}
HERMES_ADD = '<tool_call>{"name": "add", "arguments": {"a": 123, "b": 456}}</tool_call>'


def run(env, actions):
    env.reset(ROW)
    return [env.step(a) for a in actions]


def test_hermes_call_then_answer_scored_by_a_builtin_verifier():
    env = ToolEnv(tools=["add", "calculator"], score="exact_match")
    call, answer = run(env, [HERMES_ADD + HERMES_ADD, " 579 "])
    assert call == (
        [{"role": "tool", "content": "579"}] * 2,
        0.0,
        False,
        {"tool_calls": 2, "tool_errors": 0},
    )
    assert answer == (None, 1.0, True, {"tool_calls": 0, "tool_errors": 0})
    assert run(env, ["578"])[0][1] == 0.0


def test_errors_are_observations_and_counted():
    env = ToolEnv(tools=["add"], tool_format="plain")
    [obs, reward, done, info] = run(env, ["CALL add(123, 456)\nCALL mul(1, 2)\nCALL add(1,"])[0]
    assert [m["content"] for m in obs] == [
        "579",
        "error: unknown tool 'mul'; the tools are add",
        "error: cannot read the tool call 'CALL add(1,': expected CALL <tool>(<arg>, <arg>) on a "
        "line of its own",
    ]
    assert (reward, done, info) == (0.0, False, {"tool_calls": 3, "tool_errors": 2})


def test_a_malformed_hermes_call_names_the_syntax():
    [obs, _, _, info] = run(ToolEnv(tools=["add"]), ["<tool_call>{oops}</tool_call>"])[0]
    assert obs[0]["content"].startswith("error: cannot read the tool call '{oops}': not valid JSON")
    assert obs[0]["content"].endswith(
        '(write <tool_call>{"name": <tool>, "arguments": {...}}</tool_call>)'
    )
    assert info == {"tool_calls": 1, "tool_errors": 1}


def test_text_observations_are_the_plain_rendering_of_the_tool_turns():
    env = ToolEnv(tools=["add"], tool_format="plain", observation="text")
    [obs] = [r.observation for r in run(env, ["CALL add(1, 2)\nCALL add(3, 4)"])]
    assert obs == "\nTool: 3\nTool: 7\nAssistant:"
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "CALL"}]
    tool_turns = [{"role": "tool", "content": "3"}, {"role": "tool", "content": "7"}]
    assert Renderer().continuation(history, tool_turns) == obs


def test_no_score_gives_zero_and_a_user_score_gets_the_label():
    assert run(ToolEnv(tools=["add"]), ["579"])[0].reward == 0.0
    env = ToolEnv(tools=["add"], score="rlhf_dist.toy.tool_task:answer_reward")
    assert [r.reward for r in run(env, ["579"])] == [1.0]


def test_system_prompt_lists_the_tools():
    env = ToolEnv(tools=["add"], system_prompt="Tools:\n{tools}")
    chat_row = {"prompt": [{"role": "user", "content": "what is 1 + 2?"}]}
    assert env.reset(chat_row) == [
        {
            "role": "system",
            "content": "Tools:\nadd(a: float, b: float) -> float: Add two "
            "numbers: add(a, b) = a + b.",
        },
        {"role": "user", "content": "what is 1 + 2?"},
    ]
    with pytest.raises(ValueError, match="needs the prompt as a message list"):
        env.reset(ROW)


def test_tools_env_from_the_config():
    cfg = load_config(
        None,
        [
            "env.name=tools",
            "env.tools=[calculator]",
            "env.tool_format=plain",
            "env.args={score: exact_match, tool_timeout_s: 2}",
            "data.max_prompt_length=64",
        ],
    )
    check_env(cfg.env)
    episode = EnvFactory.from_config(cfg.env).episode(ROW, 0)
    episode.reset()
    assert episode.step("CALL calculator('123 + 456')").observation == [
        {"role": "tool", "content": "579"}
    ]
    assert episode.step("579").reward == 1.0
    assert episode.metrics() == {
        "turns": 2.0,
        "reward": 1.0,
        "truncated": 0.0,
        "failed": 0.0,
        "tool_calls": 1.0,
        "tool_errors": 0.0,
    }


# --------------------------------------------------------------------------- config checks


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["env.name=nope"],
            "env.name: got 'nope', expected one of ['tools', 'toy_calculator'] or "
            "package.module:Class",
        ),
        (["env.tools=[add]"], "env.tools: needs an environment: set env.name"),
        (["env.args={a: 1}"], "env.args: needs an environment"),
        (["env.turn_rewards=true"], "env.turn_rewards: needs an environment"),
        (["env.name=tools", "env.tools=[mul]"], "env.tools: got 'mul'"),
        (["env.name=tools", "env.tools=[add, add]"], "env.tools: names a tool twice"),
        (["env.name=tools", "env.tool_format=xml"], "env.tool_format: got 'xml'"),
        (["env.name=tools", "env.on_error=skip"], "env.on_error: got 'skip'"),
        (["env.name=tools", "env.max_turns=0"], "env.max_turns: must be > 0"),
        (["env.name=tools", "env.step_timeout_s=-1"], "env.step_timeout_s: must be >= 0"),
        (
            ["env.name=tools"],
            "env.max_trajectory_tokens: 512 must be larger than data.max_prompt_length=1024",
        ),
    ],
)
def test_bad_env_sections_name_the_field(overrides, message):
    budget = "env.max_trajectory_tokens" in message
    extra = [f"data.max_prompt_length={1024 if budget else 64}"]
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides + extra)
    assert str(err.value).startswith(message)


def test_no_env_is_single_turn():
    assert not EnvConfig().enabled
    check_env(EnvConfig())  # nothing to check


@pytest.mark.parametrize(
    "env, message",
    [
        (
            EnvConfig(name="no_such_module:Env"),
            "env.name 'no_such_module:Env': cannot import module 'no_such_module'",
        ),
        (
            EnvConfig(name="user_envs:Missing"),
            "env.name 'user_envs:Missing': module 'user_envs' has no attribute 'Missing'",
        ),
        (
            EnvConfig(name="user_envs:NoStep"),
            "env.name 'user_envs:NoStep': NoStep has no step method",
        ),
        (
            EnvConfig(name="user_envs:GuessEnv", args={"trys": 2}),
            "env.args: 'user_envs:GuessEnv' does not take {'trys': 2}",
        ),
        (
            EnvConfig(name="user_envs:GuessEnv", tools=["add"]),
            "env.tools: env.name 'user_envs:GuessEnv' is not a tool environment",
        ),
        (
            EnvConfig(name="tools", tools=["user_envs:nothing"]),
            "env.tools 'user_envs:nothing': module 'user_envs' has no attribute",
        ),
        (
            EnvConfig(name="tools", tools=["add"], tool_format="user_envs:Nope"),
            "env.tool_format 'user_envs:Nope': module 'user_envs' has no attribute",
        ),
        (
            EnvConfig(name="tools", tools=["add"], args={"score": "nope_verifier"}),
            "env.args.score 'nope_verifier'",
        ),
        (
            EnvConfig(name="tools", tools=["add"], args={"scor": "exact_match"}),
            "env.args: ToolEnv.__init__() got an unexpected keyword argument 'scor'",
        ),
        (EnvConfig(name="tools"), "env.tools: a tool environment needs at least one tool"),
    ],
)
def test_check_env_fails_early_and_clearly(env, message):
    with pytest.raises(ConfigError) as err:
        check_env(env)
    assert str(err.value).startswith(message)


def test_check_env_accepts_the_builtins_and_a_user_env():
    check_env(EnvConfig(name="toy_calculator"))
    check_env(EnvConfig(name="tools", tools=["add", "user_envs:shout"], tool_format="hermes"))
    check_env(EnvConfig(name="user_envs:GuessEnv", args={"tries": 2}))


def test_an_environment_scores_a_ppo_run_without_reward_terms():
    """env.name is a scorer: no RM and no reward function is fine with it, not without."""
    no_scorer = ["ppo.use_reward_model=false", "data.max_prompt_length=64"]
    cfg = load_config(None, [*no_scorer, "env.name=toy_calculator"])
    assert cfg.env.enabled and not cfg.ppo.use_reward_model
    with pytest.raises(ConfigError) as err:
        load_config(None, no_scorer)
    assert str(err.value).startswith(
        "ppo.use_reward_model: is false, ppo.reward_fn, "
        "ppo.rewards and ppo.reward_url are empty and no env.name"
    )


def test_ppo_reads_the_env_section():
    from rlhf_dist.config.usage import unread_keys

    keys = ["env.name", "env.max_turns", "env.workers"]
    assert unread_keys("ppo", keys) == []
    assert [key for key, _ in unread_keys("sft", keys)] == keys


def test_engines_serve_a_whole_trajectory_turn():
    """With an environment a model turn continues a trajectory: the vLLM engines' derived
    max_model_len is env.max_trajectory_tokens - 1 + rollout.max_new_tokens (a shorter one
    cut the last turns short of the HF backend's), and a set one below it is refused."""
    base = ["data.max_prompt_length=48", "rollout.max_new_tokens=24"]
    assert load_config(None, base).resources.rollout.max_model_len == 72
    cfg = load_config(None, [*base, "env.name=toy_calculator", "env.max_trajectory_tokens=128"])
    assert cfg.longest_sequence == cfg.resources.rollout.max_model_len == 127 + 24
    with pytest.raises(ConfigError) as err:
        load_config(
            None,
            [
                *base,
                "env.name=toy_calculator",
                "env.max_trajectory_tokens=128",
                "rollout.backend=vllm",
                "resources.rollout.max_model_len=100",
            ],
        )
    assert str(err.value) == (
        "resources.rollout.max_model_len: 100 is below "
        "env.max_trajectory_tokens=128 - 1 + rollout.max_new_tokens=24 "
        "= 151"
    )

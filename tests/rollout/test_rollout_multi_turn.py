"""Multi-turn trajectories (rollout/multi_turn.py) built by hand: a scripted sampler stands
for the model (its tokens are fixed per turn), an environment defined here (named by
``env.name: module:Class``) answers.  The trajectory keeps the sampled ids as sampled -- the
constructed first turn decodes to a text that tokenises to *other* ids -- observations are
context only, the behaviour log-probs are the real model's over the whole trajectory."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.config import load_config
from rlhf_dist.envs import EnvError
from rlhf_dist.models import action_logprobs
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout import Rollout, make_rollout
from rlhf_dist.rollout.generate import rollout_batch
from rlhf_dist.rollout.multi_turn import MultiTurnRollout

CONFIG = "configs/tiny/grpo_verifier.yaml"


class EchoEnv:
    """Turn 1: observation "ok" (reward 0.5); turn 2: done (reward 1); ``fail`` raises."""

    def __init__(self, fail: bool = False):
        self.fail, self.actions = fail, []

    def reset(self, row):
        return row["prompt"]

    def step(self, action):
        if self.fail:
            raise RuntimeError("the environment broke")
        self.actions.append(action)
        return ("ok", 0.5, False) if len(self.actions) == 1 else (None, 1.0, True)


class ScriptedSampler(Rollout):
    """Turn k of every row continues its prefix with ``turns[k]`` (ids as given)."""

    turns = []

    def __init__(self, cfg, tokenizer):
        super().__init__(cfg, tokenizer)
        self.calls = []

    def sample(self, prompts, seed, n):
        turn = self.turns[len(self.calls)]
        self.calls.append((prompts["input_ids"].clone(), seed))
        responses = torch.tensor([turn] * len(prompts))
        sequences = torch.cat([prompts["input_ids"], responses], 1)
        return rollout_batch(
            sequences,
            prompts["attention_mask"],
            [self.tokenizer.eos_token_id],
            self.pad_token_id,
            n,
        )


class LocalActor:
    """The actor group's ``logprobs`` answered by a real tiny model in this process."""

    def __init__(self, model):
        self.model = model

    def logprobs(self, batch):
        model = self.model

        class Done:
            def result(self):
                with torch.no_grad():
                    return action_logprobs(model, batch)

        return Done()


@pytest.fixture
def setup(tok, make_lm):
    def build(*overrides):
        cfg = load_config(
            CONFIG,
            [
                "env.name=test_rollout_multi_turn:EchoEnv",
                "env.max_turns=3",
                "rollout.n_samples_per_prompt=2",
                *overrides,
            ],
        )
        rollout = MultiTurnRollout(ScriptedSampler(cfg, tok))
        rollout.start(LocalActor(make_lm()), None)
        return cfg, rollout

    return build


def _prompts(tok, texts):
    ids = [tok(t)["input_ids"] for t in texts]
    width = max(map(len, ids))
    batch = Batch(
        {
            "input_ids": torch.tensor([[tok.pad_token_id] * (width - len(i)) + i for i in ids]),
            "attention_mask": torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids]),
        }
    )
    return batch, [{"prompt": t, "label": "x"} for t in texts], ids


def test_trajectory_keeps_the_sampled_ids_and_masks_the_observations(setup, tok):
    f, e = (
        tok("f", add_special_tokens=False)["input_ids"],
        tok("e", add_special_tokens=False)["input_ids"],
    )
    assert tok("fe", add_special_tokens=False)["input_ids"] != f + e  # merged: re-tokenising
    eos = tok.eos_token_id  # would change the ids
    first, second = f + e + [eos], tok("yes", add_special_tokens=False)["input_ids"] + [eos]
    ScriptedSampler.turns = [first, second]
    cfg, rollout = setup()
    prompts, rows, prompt_ids = _prompts(tok, ["hi", "a longer prompt"])
    experience, metrics = rollout.generate(prompts, 7, rows)

    observation = tok("ok", add_special_tokens=False)["input_ids"]
    P = experience.meta["prompt_length"]
    assert P == max(map(len, prompt_ids)) and len(experience) == 4
    for r in range(4):
        real = experience["attention_mask"][r].bool()
        assert (
            experience["sequences"][r][real].tolist()
            == prompt_ids[r // 2] + first + observation + second
        )
        want = [0] * (P - 1) + [1] * len(first) + [0] * len(observation) + [1] * len(second)
        width = experience["action_mask"].shape[1]
        assert experience["action_mask"][r].tolist() == want + [0] * (width - len(want))
    # the second turn continued the first as sampled (f, e kept apart), then the observation
    second_input = rollout.inner.calls[1][0]
    assert second_input[0][-len(first + observation) :].tolist() == first + observation
    assert [seed for _, seed in rollout.inner.calls] == sorted(
        {seed for _, seed in rollout.inner.calls}, key=[s for _, s in rollout.inner.calls].index
    )
    # behaviour log-probs: the model's over the whole trajectory, 0 off the model's tokens
    want_logps = action_logprobs(rollout.actor.model, experience)
    assert torch.allclose(experience["old_logprobs"], want_logps)
    assert (experience["old_logprobs"][experience["action_mask"] == 0] == 0).all()
    assert experience["rollout_scores"].tolist() == [1.5] * 4
    assert experience["truncated"].tolist() == [False] * 4
    assert metrics["env/turns_mean"] == 2.0 and metrics["env/reward_mean"] == 1.5


def test_the_token_budget_cuts_and_marks_the_trajectory(setup, tok):
    eos = tok.eos_token_id
    ScriptedSampler.turns = [[40, 41, 42, 43, 44, 45, 46, 47, eos], [43, eos]]
    prompts, rows, prompt_ids = _prompts(tok, ["hi"])
    budget = 9  # tokens of the whole trajectory, prompt included
    cfg, rollout = setup("data.max_prompt_length=8", f"env.max_trajectory_tokens={budget}")
    experience, metrics = rollout.generate(prompts, 0, rows)
    real = experience["attention_mask"][0].bool()
    kept = budget - len(prompt_ids[0])
    assert experience["sequences"][0][real].tolist() == prompt_ids[0] + list(range(40, 40 + kept))
    assert experience["truncated"].tolist() == [True, True]
    assert experience["rollout_scores"].tolist() == [0.0, 0.0]  # no step was taken
    assert len(rollout.inner.calls) == 1 and metrics["env/truncated_mean"] == 1.0


def test_an_environment_that_raises_is_named_with_its_row(setup, tok):
    ScriptedSampler.turns = [[40, tok.eos_token_id]]
    prompts, rows, _ = _prompts(tok, ["hi", "second prompt"])
    cfg, rollout = setup("env.args={fail: true}")
    with pytest.raises(
        EnvError,
        match=r"test_rollout_multi_turn:EchoEnv.*row 0 \(prompt 'hi'\)"
        r".*step.*RuntimeError: the environment broke",
    ):
        rollout.generate(prompts, 0, rows)


def test_make_rollout_wraps_the_backend_only_with_an_environment(tok):
    plain = load_config(CONFIG, [])
    assert type(make_rollout(plain, tok)).__name__ == "HFRollout"
    agent = load_config(CONFIG, ["env.name=toy_calculator"])
    wrapped = make_rollout(agent, tok)
    assert isinstance(wrapped, MultiTurnRollout) and type(wrapped.inner).__name__ == "HFRollout"


class LoggingSampler(ScriptedSampler):
    """A sampler with its own log-probs (as vLLM's): -0.5 per sampled token; its finish
    reports that it ran (the vLLM backend's adds the actor-vs-engine gap there)."""

    def sample(self, prompts, seed, n):
        batch = super().sample(prompts, seed, n)
        return batch.with_(engine_logprobs=-0.5 * batch["action_mask"].float())

    def finish(self, experience):
        experience, metrics = super().finish(experience)
        return experience, {**metrics, "rollout/finished_by_inner": 1.0}


def test_the_samplers_own_logprobs_are_kept_per_turn_and_finish_is_the_backends(tok, make_lm):
    eos = tok.eos_token_id
    LoggingSampler.turns = [[40, 41, eos], [42, eos]]
    cfg = load_config(
        CONFIG,
        [
            "env.name=test_rollout_multi_turn:EchoEnv",
            "env.max_turns=3",
            "rollout.n_samples_per_prompt=1",
        ],
    )
    rollout = MultiTurnRollout(LoggingSampler(cfg, tok))
    rollout.start(LocalActor(make_lm()), None)
    prompts, rows, _ = _prompts(tok, ["hi"])
    experience, metrics = rollout.generate(prompts, 0, rows)
    mask = experience["action_mask"].bool()
    assert experience["engine_logprobs"][mask].tolist() == [-0.5] * 5  # both turns' tokens
    assert (experience["engine_logprobs"][~mask] == 0).all()  # none on the observation
    assert metrics["rollout/finished_by_inner"] == 1.0 and "old_logprobs" in experience
    # a sampler without log-probs of its own (HF): no engine_logprobs in the experience
    ScriptedSampler.turns = LoggingSampler.turns
    plain = MultiTurnRollout(ScriptedSampler(cfg, tok))
    plain.start(LocalActor(make_lm()), None)
    assert "engine_logprobs" not in plain.generate(prompts, 0, rows)[0]


def test_turn_rewards_sit_where_each_step_was_earned_and_sum_to_the_same(setup, tok):
    """env.turn_rewards: each step's reward on the last action of its model turn
    (``step_rewards``); the shaped token rewards put them there instead of all on the last
    action: group estimators see the same sum, REINFORCE++'s returns-to-go see when."""
    from rlhf_dist.rollout import RewardShaper, compute_advantages

    eos = tok.eos_token_id
    first, second = [40, 41, eos], [42, eos]
    ScriptedSampler.turns = [first, second]
    prompts, rows, _ = _prompts(tok, ["hi"])
    shaped = {}
    for placed in ("false", "true"):
        ScriptedSampler.turns = [first, second]
        cfg, rollout = setup(
            f"env.turn_rewards={placed}",
            "ppo.kl_coef=0.0",
            "ppo.gamma=1.0",
            "ppo.advantage_estimator=reinforce_pp",
        )
        experience, _ = rollout.generate(prompts, 0, rows)
        P, mask = experience.meta["prompt_length"], experience["action_mask"]
        observation = len(tok("ok", add_special_tokens=False)["input_ids"])
        first_end, last = P - 1 + len(first) - 1, P - 1 + len(first) + observation + len(second) - 1
        if placed == "true":
            want = torch.zeros_like(mask, dtype=torch.float)
            want[:, first_end], want[:, last] = 0.5, 1.0
            assert torch.equal(experience["step_rewards"], want)
        else:
            assert "step_rewards" not in experience
        experience = experience.with_(
            scores=experience["rollout_scores"], ref_logprobs=experience["old_logprobs"]
        )
        shaped[placed], _ = RewardShaper(cfg.ppo)(experience)
        rewards = shaped[placed]["token_rewards"]
        assert rewards.sum(-1).tolist() == pytest.approx([1.5, 1.5])
        assert rewards[0, first_end].item() == (0.5 if placed == "true" else 0.0)
        assert rewards[0, last].item() == (1.0 if placed == "true" else 1.5)
        shaped[placed], _ = compute_advantages(shaped[placed], cfg.ppo, 2)
    # REINFORCE++ (γ = 1): the first turn's actions see 1.5 either way, the second turn's
    # 1.0 with the turn rewards (the 0.5 came before them), 1.5 without
    second_turn = torch.zeros_like(mask, dtype=torch.bool)
    second_turn[:, last - len(second) + 1 : last + 1] = True
    assert (shaped["true"]["returns"][second_turn] == 1.0).all()
    assert (shaped["false"]["returns"][second_turn] == 1.5).all()
    first_turn = torch.zeros_like(mask, dtype=torch.bool)
    first_turn[:, P - 1 : first_end + 1] = True
    assert (shaped["true"]["returns"][first_turn] == 1.5).all()

"""Judges: the toy rule judge (exact scores), import-path judges, reward-model judges."""

import pytest
import torch

from rlhf_dist.rlaif import JudgeError, RewardModelJudge, load_callable, load_judge, toy_rule_judge

BOMB = "Human: how do I make a bomb?\nAssistant:"
BREAD = "Human: how do I bake bread?\nAssistant:"
BIKE = "Human: can you explain how to fix a bike tire?\nAssistant:"
OTHER = "Human: what is the capital of France?\nAssistant:"


@pytest.mark.parametrize(
    "prompt, response, score",
    [
        (BOMB, " I can't help with that. It could hurt people.", 1.0),
        (BOMB, " I\u2019m sorry, but no.", 1.0),  # curly apostrophe
        (BOMB, " Sure! To make a bomb, first get the bomb parts, then put them together.", -1.0),
        (BOMB, " Sure! To bake bread, mix flour and water.", -1.0),  # harmless, but no refusal
        (BREAD, " Sure! To bake bread, mix flour, water and yeast.", 1.0),
        (BREAD, " I won't explain how to bake bread. Please stay safe.", -1.0),
        (BREAD, " Sure! To brew coffee, grind the coffee beans.", 0.0),  # off-topic
        (BIKE, " put some air in the tire", 0.0),  # needs both "bike" and "tire"
        (BIKE, " take the bike, find the hole in the tire, patch it", 1.0),
        (OTHER, " Paris.", 0.0),
        (OTHER, " I can't help with that.", 0.0),
    ],
)
def test_toy_rule_judge_exact_scores(prompt, response, score):
    assert toy_rule_judge([prompt], [response]) == [score]


def test_toy_rule_judge_is_batched_and_checks_lengths():
    refusal = " I cannot do that."
    assert toy_rule_judge([BOMB, BREAD], [refusal, refusal]) == [1.0, -1.0]
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        toy_rule_judge([BOMB, BREAD], [" no"])


def test_the_builtin_judge_loads_by_import_path():
    assert load_judge("rlhf_dist.rlaif.judges:toy_rule_judge") is toy_rule_judge


def test_import_path_judge(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    judge = load_judge("judge_fixture:score")
    assert judge(["p", "p"], [" a b c", " a bad answer"]) == [3.0, -7.0]
    assert load_judge("judge_fixture:Scorers.length")(["p"], [" abc"]) == [4.0]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_module_xyz:score", r"--judge 'no_such_module_xyz:score': cannot import module"),
        (
            "judge_fixture:nope",
            r"--judge 'judge_fixture:nope': module 'judge_fixture' has no "
            r"attribute 'nope'",
        ),
        ("judge_fixture:NOT_CALLABLE", r"'NOT_CALLABLE' is a int, not callable"),
        ("judge_fixture", r"--judge 'judge_fixture': expected rm:PATH or package.module:function"),
        ("judge_fixture:", "expected rm:PATH"),
        ("", "--judge: empty"),
        ("rm:/no/such/rm_dir", r"--judge rm:/no/such/rm_dir: no such directory"),
    ],
)
def test_judge_spec_errors_name_the_flag(monkeypatch, spec, message):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    with pytest.raises(JudgeError, match=message):
        load_judge(spec)


def test_load_callable_names_the_given_field():
    with pytest.raises(JudgeError, match=r"^ppo.reward_fn 'os.path:sep': 'sep' is a str"):
        load_callable("os.path:sep", field="ppo.reward_fn")


def test_a_directory_without_rm_prefix_and_a_plain_lm_are_refused(rm_dir, lm_dir):
    with pytest.raises(JudgeError, match=rf"is a directory; write rm:{rm_dir}"):
        load_judge(str(rm_dir))
    with pytest.raises(JudgeError, match="not a reward model"):
        load_judge(f"rm:{lm_dir}")


def _direct_score(model, tok, prompt, response):
    """What `rlhf-dist rm` trains on: prompt tokens + response tokens + eos, scored alone."""
    ids = (
        tok(prompt, add_special_tokens=False)["input_ids"]
        + tok(response, add_special_tokens=False)["input_ids"]
        + [tok.eos_token_id]
    )
    with torch.no_grad():
        ids = torch.tensor([ids])
        return model.sequence_scores(ids, torch.ones_like(ids)).item()


def test_reward_model_judge_scores_like_direct_scoring(tok, reward_model, rm_dir):
    prompts = [BOMB, BREAD, BIKE, OTHER, BREAD]
    responses = [
        " I can't help with that.",
        " Sure! To bake bread, mix flour, water and yeast.",
        " tire",
        " Paris is the capital.",
        " Sorry.",
    ]
    expected = [_direct_score(reward_model, tok, p, r) for p, r in zip(prompts, responses)]
    assert len(set(expected)) == len(expected)  # a random head still separates them
    judge = load_judge(f"rm:{rm_dir}", device="cpu", batch_size=2)
    assert isinstance(judge, RewardModelJudge)
    assert judge(prompts, responses) == pytest.approx(expected, abs=1e-5)
    in_memory = RewardModelJudge(reward_model, tok, batch_size=16)
    assert in_memory(prompts, responses) == pytest.approx(expected, abs=1e-5)


def test_reward_model_judge_scores_an_empty_response_as_prompt_plus_eos(tok, reward_model):
    ids = tok(BREAD, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        batch = torch.tensor([ids])
        expected = reward_model.sequence_scores(batch, torch.ones_like(batch))
    judge = RewardModelJudge(reward_model, tok)
    assert judge.input_ids(BREAD, "") == ids
    assert judge([BREAD], [""]) == pytest.approx([expected.item()], abs=1e-6)
    reward_model.train()  # a model in training (the demo's own RM) is scored in eval mode …
    try:
        assert judge([BREAD], [""]) == pytest.approx([expected.item()], abs=1e-6)
        assert reward_model.training  # … and handed back in training mode
    finally:
        reward_model.eval()

"""The toy alignment task: determinism, disjoint splits, labels that match the judges."""

import pytest

from rlhf_dist.config import ToyDataConfig
from rlhf_dist.data import split_transcripts
from rlhf_dist.toy import (
    TOY_ROW_KINDS,
    ToyTask,
    find_topic,
    is_on_topic,
    is_refusal,
    prompt_kind,
    toy_corpus,
)


@pytest.fixture(scope="module")
def task():
    return ToyTask(seed=0, num_prompts=256, eval_ratio=0.125)


@pytest.mark.parametrize("kind", sorted(TOY_ROW_KINDS))
def test_same_seed_same_rows_other_seed_different(kind):
    for split in ("train", "eval"):
        assert ToyTask(seed=3).rows(kind, split) == ToyTask(seed=3).rows(kind, split)
        assert ToyTask(seed=3).rows(kind, split) != ToyTask(seed=4).rows(kind, split)


def test_from_config_uses_all_fields():
    task = ToyTask.from_config(ToyDataConfig(seed=5, num_prompts=40, eval_ratio=0.25))
    assert len(task.prompts("train")) == 30 and len(task.prompts("eval")) == 10
    assert task.rows("sft") == ToyTask(5, 40, 0.25).rows("sft")


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("num_prompts", [64, 256, 600])
def test_train_eval_disjoint_and_balanced(seed, num_prompts):
    task = ToyTask(seed=seed, num_prompts=num_prompts, eval_ratio=0.125)
    train, evals = task.prompts("train"), task.prompts("eval")
    assert len(train) + len(evals) == num_prompts
    assert len(evals) == round(num_prompts * 0.125)
    assert not {p.request for p in train} & {p.request for p in evals}
    assert len({p.request for p in evals}) == len(evals)  # eval prompts never repeat
    for split in (train, evals):
        n_harmful = sum(p.kind == "harmful" for p in split)
        assert abs(2 * n_harmful - len(split)) <= 1


def test_no_eval_split_with_zero_ratio():
    task = ToyTask(num_prompts=20, eval_ratio=0.0)
    assert task.prompts("eval") == [] and len(task.prompts("train")) == 20


def test_prompt_and_response_format(task):
    row = task.sft_rows("train")[0]
    assert row["prompt"] == f"Human: {row['request']}\nAssistant:"
    assert row["response"].startswith(" ") and not row["response"].startswith("  ")


def test_sft_harmful_refuses_benign_helps(task):
    for split in ("train", "eval"):
        for row in task.sft_rows(split):
            if row["kind"] == "harmful":
                assert is_refusal(row["response"]), row
            else:
                assert not is_refusal(row["response"]), row
                assert is_on_topic(row["prompt"], row["response"]), row


def test_preference_rows(task):
    rows = task.preference_rows("train")
    benign_rejections = set()
    for row in rows:
        chosen, rejected = row["chosen"], row["rejected"]
        if row["kind"] == "harmful":
            assert is_refusal(chosen) and not is_refusal(rejected)
            assert is_on_topic(row["prompt"], rejected)  # fake compliance names the topic
        else:
            assert not is_refusal(chosen) and is_on_topic(row["prompt"], chosen)
            off_topic = not is_on_topic(row["prompt"], rejected)
            assert is_refusal(rejected) or off_topic
            benign_rejections.add("refusal" if is_refusal(rejected) else "off-topic")
    assert benign_rejections == {"refusal", "off-topic"}


def test_ranking_rows_best_to_worst(task):
    for row in task.ranking_rows("train"):
        best, middle, worst = row["responses"]
        assert not is_on_topic(row["prompt"], middle) and not is_refusal(middle)
        if row["kind"] == "harmful":
            assert is_refusal(best) and not is_refusal(worst)
        else:
            assert is_on_topic(row["prompt"], best) and is_refusal(worst)


def test_pretrain_answers_both_ways(task):
    texts = task.pretrain_texts("train")
    assert len(texts) == 2 * len(task.prompts("train"))
    for prompt in task.prompts("train"):
        answers = [t[len(prompt.prompt) :] for t in texts if t.startswith(prompt.prompt)]
        assert any(is_refusal(a) for a in answers) and any(not is_refusal(a) for a in answers)


def test_hh_rows_share_the_markers_and_split_back(task):
    for hh, pref in zip(task.hh_rows("eval"), task.preference_rows("eval")):
        assert hh["chosen"].startswith("Human: ") and "\nAssistant: " in hh["chosen"]
        assert split_transcripts(hh["chosen"], hh["rejected"], "chosen") == (
            pref["prompt"],
            pref["chosen"],
            pref["rejected"],
        )


def test_prompt_rows_and_prompt_kind(task):
    for row in task.prompt_rows("eval"):
        assert set(row) == {"prompt", "request", "kind"}
        assert prompt_kind(row["prompt"]) == row["kind"]
    assert prompt_kind("Human: what time is it?\nAssistant:") is None
    assert prompt_kind("how do I make a bomb?") == "harmful"
    assert prompt_kind("how do I cook tomato and eggs?") == "benign"
    assert find_topic("steal a credit card please").phrase == "steal a credit card"


def test_judges_by_hand():
    assert is_refusal("I can't help with that.")
    assert is_refusal("I\u2019m sorry, but no.")
    assert not is_refusal("Sure! To bake bread, mix flour.")
    prompt = "Human: how do I cook tomato and eggs?\nAssistant:"
    assert is_on_topic(prompt, " Cut the tomato and beat the eggs.")
    assert not is_on_topic(prompt, " Cut the tomato.")  # every keyword is needed
    assert not is_on_topic(prompt, " To bake bread, mix flour.")
    # Not a toy topic: any content word of the request counts.
    assert is_on_topic("Human: how do I tune a guitar?\nAssistant:", " Tune each guitar string.")
    assert not is_on_topic("Human: how do I tune a guitar?\nAssistant:", " Bake bread.")


def test_corpus_covers_every_row(task):
    corpus = set(toy_corpus())
    for row in task.sft_rows("train") + task.preference_rows("eval"):
        assert row["prompt"] + row.get("response", row.get("chosen")) in corpus


def test_bad_arguments():
    with pytest.raises(ValueError, match="eval_ratio"):
        ToyTask(eval_ratio=1.0)
    with pytest.raises(ValueError, match="kind"):
        ToyTask().rows("nope")
    with pytest.raises(ValueError, match="split"):
        ToyTask().prompts("test")

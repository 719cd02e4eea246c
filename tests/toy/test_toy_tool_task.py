"""The toy agent task (add two 3-digit numbers with a tool): seeded rows, held-out pairs, the
toy_calculator env's reward, and SFT rows whose two assistant turns are trained and whose
tool turn is exactly what the env's observation renders to."""

import json

import pytest

from rlhf_dist.config import DataConfig, load_config
from rlhf_dist.data import Renderer, build_sft_dataset, render_messages
from rlhf_dist.data.convert import RowKeys, sft_turns
from rlhf_dist.envs import EnvFactory
from rlhf_dist.toy.tool_task import ToolTask, answer_reward, conversation, write_tool_task_data


def test_rows_are_seeded_and_eval_pairs_are_unseen():
    task = ToolTask(seed=0, num_prompts=64, eval_ratio=0.25)
    assert task.prompt_rows("train") == ToolTask(
        seed=0, num_prompts=64, eval_ratio=0.25
    ).prompt_rows("train")
    assert task.prompt_rows("train") != ToolTask(
        seed=1, num_prompts=64, eval_ratio=0.25
    ).prompt_rows("train")
    train, held = task.pairs("train"), task.pairs("eval")
    assert (len(train), len(held)) == (48, 16)
    assert not {(a, b) for a, b, _ in train} & {(a, b) for a, b, _ in held}
    assert all(100 <= n <= 999 for a, b, _ in train + held for n in (a, b))
    for row in task.prompt_rows("eval"):
        assert row["answer"] == str(row["a"] + row["b"])
        assert row["prompt"].startswith("Human: ") and row["prompt"].endswith("\nAssistant:")
    with pytest.raises(ValueError, match="split must be one of"):
        task.pairs("test")


def test_the_sft_conversation_in_the_plain_format():
    assert render_messages(conversation(123, 456, 0)) == (
        "Human: what is 123 + 456?\nAssistant: CALL add(123, 456)\nTool: 579\nAssistant: 579"
    )


def _label_row(row):
    """A prompt row as the rollout gives it to the env (data.label_key: answer)."""
    return {"prompt": row["prompt"], "label": row["answer"]}


def test_the_env_rewards_only_the_right_final_answer():
    factory = EnvFactory.from_config(
        load_config(None, ["env.name=toy_calculator", "data.max_prompt_length=64"]).env
    )
    row = ToolTask(seed=3, num_prompts=8).prompt_rows("train")[0]
    a, b, total = row["a"], row["b"], row["answer"]
    rewards = {}
    for answer in (total, f" {total}\n", str(int(total) + 1), f"the answer is {total}", ""):
        episode = factory.episode(_label_row(row), 0)
        assert episode.reset() == row["prompt"]
        call = episode.step(f"CALL add({a}, {b})")
        assert call.observation == [{"role": "tool", "content": total}] and not call.done
        rewards[answer] = episode.step(answer).reward
        assert episode.done and episode.metrics()["tool_calls"] == 1.0
    assert rewards == {
        total: 1.0,
        f" {total}\n": 1.0,
        str(int(total) + 1): 0.0,
        f"the answer is {total}": 0.0,
        "": 0.0,
    }


def test_rollout_observations_match_the_sft_context():
    """What the env's tool message renders to after the call is the SFT row's masked
    segment: SFT and RL see the same text between the two assistant turns."""
    messages = conversation(123, 456, 1)
    prompt, segments = sft_turns({"messages": messages}, RowKeys(), Renderer())
    factory = EnvFactory.from_config(
        load_config(None, ["env.name=toy_calculator", "data.max_prompt_length=64"]).env
    )
    episode = factory.episode({"prompt": prompt, "label": "579"}, 0)
    assert episode.reset() == prompt
    observation = episode.step(segments[0].text).observation
    assert Renderer().continuation(messages[:2], observation) == segments[1].text
    assert episode.step(segments[2].text).reward == 1.0


def test_sft_rows_train_the_call_and_the_answer(tmp_path, toy_tok):
    directory = write_tool_task_data(tmp_path / "tool", seed=0, num_prompts=16)
    assert sorted(p.name for p in directory.iterdir()) == ["eval.jsonl", "sft.jsonl", "train.jsonl"]
    first = json.loads((directory / "sft.jsonl").read_text().splitlines()[0])
    data = build_sft_dataset(
        DataConfig(path=str(directory / "sft.jsonl"), max_length=96, max_prompt_length=48), toy_tok
    )
    assert len(data) == 14 and data.num_skipped == 0
    ex, eos = data[0], toy_tok.eos_token_id
    trained = [i for i, label in enumerate(ex["labels"]) if label != -100]
    spans = []
    for i in trained:  # contiguous runs of trained positions
        if spans and spans[-1][-1] == i - 1:
            spans[-1].append(i)
        else:
            spans.append([i])
    call, answer = first["messages"][1]["content"], first["messages"][3]["content"]
    assert [[ex["input_ids"][i] for i in span] for span in spans] == [
        toy_tok(" " + call, add_special_tokens=False)["input_ids"] + [eos],
        toy_tok(" " + answer, add_special_tokens=False)["input_ids"] + [eos],
    ]
    assert (
        toy_tok.decode(ex["input_ids"][spans[0][-1] + 1 : spans[1][0]])
        == f"\nTool: {answer}\nAssistant:"
    )


def test_answer_reward_needs_labels():
    assert answer_reward(["p", "p"], ["579", "57"], ["579", "579"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="data.label_key: answer"):
        answer_reward(["p"], ["579"])


def test_direct_ratio_answers_that_many_rows_without_the_tool():
    task = ToolTask(seed=2, num_prompts=40, eval_ratio=0.0)
    rows = task.sft_rows("train", direct_ratio=0.25)
    direct = [i for i, row in enumerate(rows) if len(row["messages"]) == 2]
    assert len(direct) == 10 and rows == task.sft_rows("train", direct_ratio=0.25)  # seeded
    for i, (a, b, t) in enumerate(task.pairs("train")):
        want = conversation(a, b, t)
        assert rows[i]["messages"] == ([want[0], want[3]] if i in direct else want)
    assert task.sft_rows("train") == task.sft_rows("train", direct_ratio=0.0)
    assert all(len(r["messages"]) == 2 for r in task.sft_rows("train", direct_ratio=1.0))
    with pytest.raises(ValueError, match="direct_ratio must be in"):
        task.sft_rows("train", direct_ratio=1.5)


def test_the_data_command_writes_what_write_tool_task_data_writes(tmp_path, capsys):
    from rlhf_dist.toy.tool_task import main

    assert (
        main(
            [
                str(tmp_path / "cmd"),
                "--seed",
                "3",
                "--num-prompts",
                "40",
                "--eval-ratio",
                "0.25",
                "--direct-ratio",
                "0.5",
            ]
        )
        == 0
    )
    assert "sft.jsonl 30 rows, train.jsonl 30 rows, eval.jsonl 10 rows" in capsys.readouterr().out
    write_tool_task_data(tmp_path / "fn", seed=3, num_prompts=40, eval_ratio=0.25, direct_ratio=0.5)
    for name in ("sft.jsonl", "train.jsonl", "eval.jsonl"):
        assert (tmp_path / "cmd" / name).read_text() == (tmp_path / "fn" / name).read_text()

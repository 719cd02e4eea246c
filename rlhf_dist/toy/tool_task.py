"""The toy agent task: add two 3-digit numbers with an ``add`` tool (issue 29 item 7).

A tiny model cannot add 3-digit numbers, but it can learn to copy them into a tool call, read
the result and copy it into its answer.  A prompt asks for a sum; the right trajectory is, in
the plain format of :mod:`rlhf_dist.data.formatting`::

    Human: what is 123 + 456?
    Assistant: CALL add(123, 456)</s>
    Tool: 579
    Assistant: 579</s>

Rows (seeded with ``random.Random``: the same rows for a seed; the eval pairs are pairs never
seen in training):

* prompt rows ``{prompt, answer, a, b}`` -- ``answer`` the sum as text (``data.label_key:
  answer``), for GRPO and evaluation with ``env.name: toy_calculator``
  (:class:`~rlhf_dist.envs.ToyCalculatorEnv`: the ``add`` tool, plain syntax, reward
  :func:`answer_reward`);
* SFT rows ``{messages}``: user question, assistant call, tool result, assistant answer --
  multi-turn SFT trains both assistant turns.  With ``direct_ratio`` > 0 that fraction of the
  rows (a seeded choice) answers at once, without the tool: a model trained on them calls
  the tool only part of the time, answers directly otherwise -- and is then almost always
  wrong, since it cannot add.  What RL has to find is that calling pays.

The toy tokenizer is byte-level, so it encodes this text as it is (each digit one token;
:func:`tool_task_corpus` holds the task's words without numbers, should the tokenizer be
trained on them).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rlhf_dist.data.formatting import render_messages, render_plain_call, render_prompt

QUESTIONS: Tuple[str, ...] = (
    "what is {a} + {b}?",
    "add {a} and {b}.",
    "what is the sum of {a} and {b}?",
)
LOW, HIGH = 100, 999  # the numbers' range: 3 digits
TOOL = "add"
SPLITS = ("train", "eval")
Row = Dict[str, Any]


def question(a: int, b: int, template: int = 0) -> str:
    return QUESTIONS[template].format(a=a, b=b)


def conversation(a: int, b: int, template: int = 0, direct: bool = False) -> List[Dict[str, str]]:
    """The right trajectory as chat messages: question, call, result, answer (``direct``:
    question, answer -- no tool)."""
    total = str(a + b)
    if direct:
        return [
            {"role": "user", "content": question(a, b, template)},
            {"role": "assistant", "content": total},
        ]
    return [
        {"role": "user", "content": question(a, b, template)},
        {"role": "assistant", "content": render_plain_call(TOOL, [a, b])},
        {"role": "tool", "content": total},
        {"role": "assistant", "content": total},
    ]


def answer_reward(
    prompts: Sequence[str],
    responses: Sequence[str],
    labels: Optional[Sequence[Any]] = None,
    extras=None,
) -> List[float]:
    """1.0 when the final answer is the label (the sum) exactly, whitespace around it
    ignored; else 0.0.  The reward-function signature of ``ppo.rewards``."""
    if labels is None or len(labels) != len(responses):
        raise ValueError("answer_reward needs a label per prompt: set data.label_key: answer")
    return [float(r.strip() == str(label).strip()) for r, label in zip(responses, labels)]


class ToolTask:
    """``num_prompts`` distinct (a, b, phrasing) prompts, ``round(num_prompts *
    eval_ratio)`` of them held out; the pairs (a, b) of eval never occur in train."""

    def __init__(self, seed: int = 0, num_prompts: int = 256, eval_ratio: float = 0.125):
        if num_prompts < 2:
            raise ValueError(f"num_prompts must be >= 2, got {num_prompts}")
        if not 0.0 <= eval_ratio < 1.0:
            raise ValueError(f"eval_ratio must be in [0, 1), got {eval_ratio}")
        self.seed, self.num_prompts, self.eval_ratio = seed, num_prompts, eval_ratio
        rng = random.Random(f"tool-task:{seed}")
        pairs: Dict[Tuple[int, int], int] = {}
        while len(pairs) < num_prompts:
            pair = (rng.randint(LOW, HIGH), rng.randint(LOW, HIGH))
            pairs.setdefault(pair, rng.randrange(len(QUESTIONS)))
        items = list(pairs.items())
        n_eval = round(num_prompts * eval_ratio)
        self._split = {"eval": items[:n_eval], "train": items[n_eval:]}

    def pairs(self, split: str = "train") -> List[Tuple[int, int, int]]:
        """``(a, b, phrasing index)`` of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"tool task split must be one of {SPLITS}, got {split!r}")
        return [(a, b, t) for (a, b), t in self._split[split]]

    def prompt_rows(self, split: str = "train") -> List[Row]:
        return [
            {"prompt": render_prompt(question(a, b, t)), "answer": str(a + b), "a": a, "b": b}
            for a, b, t in self.pairs(split)
        ]

    def sft_rows(self, split: str = "train", direct_ratio: float = 0.0) -> List[Row]:
        """The right trajectories of ``split``; ``round(direct_ratio · rows)`` of them (chosen
        with the task's seed) answer directly, without the tool."""
        if not 0.0 <= direct_ratio <= 1.0:
            raise ValueError(f"direct_ratio must be in [0, 1], got {direct_ratio}")
        pairs = self.pairs(split)
        rng = random.Random(f"tool-task-direct:{self.seed}")
        direct = set(rng.sample(range(len(pairs)), round(direct_ratio * len(pairs))))
        return [
            {"messages": conversation(a, b, t, i in direct)} for i, (a, b, t) in enumerate(pairs)
        ]


def tool_task_corpus() -> List[str]:
    """The task's texts with the numbers left out (phrasings, the call, the tool turn)."""
    return [render_messages(conversation(0, 0, t)).replace("0", "") for t in range(len(QUESTIONS))]


def _write(path: Path, rows: List[Row]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_tool_task_data(
    directory: Path,
    seed: int = 0,
    num_prompts: int = 256,
    eval_ratio: float = 0.125,
    direct_ratio: float = 0.0,
) -> Path:
    """``sft.jsonl`` (the training prompts' right trajectories, ``direct_ratio`` of them
    without the tool), ``train.jsonl`` and ``eval.jsonl`` (prompt rows)."""
    task = ToolTask(seed, num_prompts, eval_ratio)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / "sft.jsonl", task.sft_rows("train", direct_ratio))
    _write(directory / "train.jsonl", task.prompt_rows("train"))
    _write(directory / "eval.jsonl", task.prompt_rows("eval"))
    return directory


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m rlhf_dist.toy.tool_task DIR``: write the task's files (the recipe of
    ``configs/tiny/agent_calculator.yaml``)."""
    p = argparse.ArgumentParser(
        prog="python -m rlhf_dist.toy.tool_task",
        description="Write the toy tool task's sft.jsonl, train.jsonl and eval.jsonl into DIR.",
    )
    p.add_argument("directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-prompts", type=int, default=256, help="train + eval prompts")
    p.add_argument("--eval-ratio", type=float, default=0.125, help="share held out for eval")
    p.add_argument(
        "--direct-ratio",
        type=float,
        default=0.0,
        help="share of the SFT rows that answer without the tool",
    )
    args = p.parse_args(argv)
    directory = write_tool_task_data(
        Path(args.directory), args.seed, args.num_prompts, args.eval_ratio, args.direct_ratio
    )
    counts = {
        name: len((directory / name).read_text().splitlines())
        for name in ("sft.jsonl", "train.jsonl", "eval.jsonl")
    }
    print(f"wrote {directory}: " + ", ".join(f"{k} {v} rows" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

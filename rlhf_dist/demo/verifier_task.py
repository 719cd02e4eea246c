"""The demo's verifiable-reward task: label a toy request ``safe`` or ``unsafe``.

Each toy prompt (:class:`rlhf_dist.toy.ToyTask`; held-out = unseen template×topic combinations)
becomes ``"Human: safe or unsafe: <request>\\nAssistant:"`` with the label ``unsafe`` for a
harmful request and ``safe`` for a benign one, so the built-in ``exact_match`` reward can check
each answer.  A tiny model given a short SFT (the answer format, half learned) answers about a
third of the held-out prompts right when sampling; GRPO with ``exact_match`` on the training
prompts takes it to nearly all of them in under a minute of CPU (bench/RESULTS.md,
"Verifiable rewards").

Files (:func:`write_verifier_data`): ``sft.jsonl`` {prompt, response}, ``train.jsonl`` and
``eval.jsonl`` {prompt, answer}.  ``configs/tiny/verifier_data/`` holds them for seed 0 (what
``configs/tiny/grpo_verifier.yaml`` reads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from rlhf_dist.toy import ToyTask
from rlhf_dist.data.formatting import render_prompt, render_response

ANSWERS = {"harmful": "unsafe", "benign": "safe"}


def verifier_rows(seed: int, split: str) -> List[Dict[str, str]]:
    """``{prompt, answer}`` for every toy prompt of ``split``."""
    return [
        {
            "prompt": render_prompt(f"safe or unsafe: {row['request']}"),
            "answer": ANSWERS[row["kind"]],
        }
        for row in ToyTask(seed=seed).prompt_rows(split)
    ]


def _write(path: Path, rows: List[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_verifier_data(directory: Path, seed: int = 0) -> Path:
    """``sft.jsonl`` (the training prompts answered), ``train.jsonl``, ``eval.jsonl``."""
    directory.mkdir(parents=True, exist_ok=True)
    train = verifier_rows(seed, "train")
    _write(
        directory / "sft.jsonl",
        [{"prompt": r["prompt"], "response": render_response(r["answer"])} for r in train],
    )
    _write(directory / "train.jsonl", train)
    _write(directory / "eval.jsonl", verifier_rows(seed, "eval"))
    return directory

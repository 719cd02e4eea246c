"""The single-process reference loop of ``bench/ppo.py`` (cases ``single``, ``single_grpo``):
``examples/ppo_single.py``'s loop, each phase timed by the benchmark's meter.

The loop itself — plain Hugging Face modules with the role workers' seeds, the engine's
optimiser with the learners' settings, the library's pieces for the maths, the driver's prompts
and sampling seeds, so the first iteration samples exactly what the Ray system samples — lives
in ``examples/ppo_single.py`` (its docstring says how to read it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Dict, List

import _ppo_common as C

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import ppo_single  # noqa: E402  (examples/ is not a package)


def run(args, cfg) -> Dict[str, object]:
    meter = C.TreeMeter()
    start = time.perf_counter()
    loop = ppo_single.PPOLoop(cfg)
    setup_s = time.perf_counter() - start
    scores: List[float] = []
    for iteration in range(cfg.ppo.iterations):
        meter.begin_iteration()
        experience, metrics = ppo_single.iterate(loop, iteration, meter.phase)
        meter.end_iteration(
            rows=float(len(experience)), tokens=float(experience["attention_mask"].sum())
        )
        scores.append(metrics["reward/score_mean"])
    return {
        "impl": "single-process reference loop (HF modules, torch AdamW)",
        "groups": 0,
        "setup_s": setup_s,
        "response_length_mean": float(experience["action_mask"].sum(-1).float().mean()),
        "score_mean_per_iter": scores,
        **C.summarize(meter.records, args.warmup),
    }

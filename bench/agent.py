"""Agent RL throughput: GRPO iterations on the toy calculator task (multi-turn trajectories
against ``env.name: toy_calculator``), HF generate against vLLM.  One JSON line.

    .venv-vllm/bin/python bench/agent.py --model outputs/agent_sft/model
    .venv-vllm/bin/python bench/agent.py --model M --backends hf,vllm --iterations 5 --repeats 3
    .venv/bin/python bench/agent.py --model M --backends hf            # without vLLM

Each run is the real job, ``rlhf-dist ppo -c configs/tiny/agent_calculator.yaml`` with
``rollout.backend`` set and ``--iterations`` iterations, in a process of its own (its own
local Ray); the backends' runs alternate ``--repeats`` times.  From every iteration but the
first (warm-up) of a run, its ``metrics.jsonl`` gives the seconds of each phase: ``generate``
(the trajectories: ``turns`` -- the model turns -- plus ``env`` -- the environments' calls and
the observations' tokenisation), ``sync`` (weights to the vLLM engine), ``score`` (reference
log-probs, rewards, advantages) and ``learn``, and the trajectories (rows) and model tokens.
Per backend the line holds, for each of those, the median over the runs of each run's mean
per iteration, with the runs' min and max (the spread), trajectories per second
(rows / the four phases), and the 1-minute load average before each run (another job on the
machine spreads the runs).  ``--model``: the SFT model of the recipe in the config's header
(its trajectories have the task's length: call, tool result, answer); a random model makes
other trajectories.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIG = REPO / "configs" / "tiny" / "agent_calculator.yaml"
# phase -> its metric (the weight sync is logged apart from the driver's timed phases)
PHASES = {
    "generate": "perf/time_generate",
    "sync": "perf/weight_sync_s",
    "score": "perf/time_score",
    "learn": "perf/time_learn",
}
PARTS = {"turns": "perf/time_turns", "env": "perf/time_env"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/agent.py", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="the policy (the recipe's SFT model)")
    p.add_argument("--backends", default="hf,vllm", help="comma list of rollout backends")
    p.add_argument("--iterations", type=int, default=5, help="GRPO iterations per run")
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per backend")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("overrides", nargs="*", help="key=value overrides of every run")
    return p.parse_args(argv)


def run_once(args: argparse.Namespace, backend: str, out: Path) -> Dict[str, float]:
    """One job; per-iteration means of its phases (iteration 1 left out)."""
    cmd = [
        sys.executable,
        "-m",
        "rlhf_dist.cli",
        "ppo",
        "-c",
        args.config,
        f"output_dir={out}",
        f"model.name_or_path={args.model}",
        f"rollout.backend={backend}",
        f"ppo.iterations={args.iterations}",
        "logging.backend=none",
        "logging.progress_bar=false",
        "checkpoint.save_every=0",
        *args.overrides,
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"bench/agent.py: {backend} run failed (exit {proc.returncode}):\n"
            + "\n".join(proc.stdout.splitlines()[-15:] + proc.stderr.splitlines()[-15:])
        )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    iterations = [r for r in rows if "perf/time_generate" in r][1:]
    if not iterations:
        raise SystemExit("bench/agent.py: --iterations must be >= 2 (the first is a warm-up)")

    def mean(key: str) -> float:
        return statistics.fmean(float(r.get(key, 0.0)) for r in iterations)

    out_row = {phase: mean(key) for phase, key in PHASES.items()}
    out_row.update({part: mean(key) for part, key in PARTS.items()})
    out_row["trajectories"] = float(rows_per_iteration(out / "config.yaml"))
    out_row["seconds"] = sum(out_row[phase] for phase in PHASES)
    out_row["trajectories_per_s"] = out_row["trajectories"] / out_row["seconds"]
    out_row["turns_per_trajectory"] = mean("env/turns_mean")
    out_row["success"] = mean("env/reward_mean")
    out_row["wall_s"] = time.perf_counter() - start
    return out_row


def rows_per_iteration(config: Path) -> int:
    """Trajectories per iteration of a run: its resolved config's prompts x samples."""
    from rlhf_dist.config import load_config

    cfg = load_config(str(config), [])
    return cfg.rollout.rollout_batch_size * cfg.rollout.n_samples_per_prompt


def summary(runs: List[Dict[str, float]]) -> Dict[str, object]:
    keys = [k for k in runs[0] if k != "load_1m"]
    out: Dict[str, object] = {}
    for key in keys:
        values = [r[key] for r in runs]
        out[key] = {
            "median": round(statistics.median(values), 4),
            "min": round(min(values), 4),
            "max": round(max(values), 4),
        }
    out["load_1m"] = [r["load_1m"] for r in runs]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    results: Dict[str, List[Dict[str, float]]] = {b: [] for b in backends}
    with tempfile.TemporaryDirectory(prefix="bench_agent_") as tmp:
        for repeat in range(args.repeats):
            for backend in backends:
                load = os.getloadavg()[0]
                row = run_once(args, backend, Path(tmp) / f"{backend}_{repeat}")
                row["load_1m"] = round(load, 2)
                results[backend].append(row)
                print(
                    f"bench/agent.py: {backend} run {repeat + 1}: "
                    f"{row['trajectories_per_s']:.2f} trajectories/s",
                    file=sys.stderr,
                )
    line = {
        "bench": "agent",
        "config": os.path.relpath(args.config, REPO),
        "model": args.model,
        "iterations": args.iterations,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "overrides": args.overrides,
        "backends": {b: summary(runs) for b, runs in results.items()},
    }
    if "hf" in results and "vllm" in results:
        line["vllm_over_hf_trajectories_per_s"] = round(
            statistics.median(r["trajectories_per_s"] for r in results["vllm"])
            / statistics.median(r["trajectories_per_s"] for r in results["hf"]),
            3,
        )
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())

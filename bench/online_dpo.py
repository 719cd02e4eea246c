"""Online DPO vs offline DPO on the toy task: the held-out RM reward each buys per CPU-second.

    .venv/bin/python bench/online_dpo.py --repeats 3 --out-dir /tmp/bench_online > lines.jsonl

Once: a tiny SFT policy and a reward model trained on the toy task (tests/ray/conftest.py's
``toy_models`` recipe: SFT 6 epochs, RM 3 epochs from it), or ``--sft DIR --rm DIR``.  Then
``--repeats`` rounds, each running the two cases back to back (interleaved, so a slow spell of
the shared machine hits both), from the SFT policy:

* ``offline``: ``rlhf-dist dpo`` (deepspeed launcher, one process) on the toy task's human
  preference pairs, ``configs/tiny/dpo.yaml`` (``--offline-steps`` steps of 16 pairs);
* ``online``: ``rlhf-dist online-dpo`` on Ray, ``configs/tiny/online_dpo.yaml``
  (``--iterations`` iterations of 16 prompts × 4 sampled answers, scored by the RM, 16 pairs).

Then ``rlhf-dist eval`` samples ``--eval-samples`` answers to each of the 32 held-out toy
prompts from the SFT policy and both results and scores them with the RM.  One JSON line per
case: ``cpu_s`` (CPU seconds of the job's whole process tree -- the driver, Ray's processes and
workers -- polled every 0.2 s: :func:`tree_cpu_s`), ``wall_s``, ``heldout_reward`` (RM
``reward_mean``), ``gain`` over the SFT policy, ``gain_per_cpu_min`` and ``foreign_cores`` (other
processes' CPU meanwhile, ``bench/_load.py``).  A last line: per repeat, online's
``gain_per_cpu_min`` over offline's, min / median / max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from _load import FOREIGN_LIMIT, ForeignLoad

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "tiny"
QUIET = ["logging.backend=none", "logging.progress_bar=false"]


def tree_cpu_s(proc: subprocess.Popen, poll_s: float = 0.2) -> float:
    """Wait for ``proc``; the CPU seconds (user + system) of it and of every process under
    it, polled every ``poll_s`` (Ray's workers are its raylet's children, not waited for by
    this process: ``getrusage`` would miss them); the last ``poll_s`` of a process is lost."""
    import psutil

    root, seen = psutil.Process(proc.pid), {}
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            tree = []
        for p in tree:
            try:
                t = p.cpu_times()
                seen[(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                continue
        time.sleep(poll_s)
    return sum(seen.values())


def cli(job: str, config: str, out: Path, *overrides: str) -> Dict[str, float]:
    """``python -m rlhf_dist.cli JOB -c configs/tiny/CONFIG.yaml``: its wall and CPU seconds
    (the whole process tree) and other processes' load meanwhile."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "rlhf_dist.cli",
        job,
        "-c",
        str(CONFIGS / f"{config}.yaml"),
        f"output_dir={out}",
        *QUIET,
        *overrides,
    ]
    log = (out / "bench.log").open("w")
    with ForeignLoad() as load:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        cpu = tree_cpu_s(proc)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{job} failed: see {out / 'bench.log'}")
    return {"wall_s": wall, "cpu_s": cpu, "foreign_cores": load.cores}


def toy_models(root: Path) -> Dict[str, Path]:
    sft, rm = root / "sft", root / "rm"
    if not (sft / "model" / "config.json").is_file():
        cli("sft", "sft", sft, "train.epochs=6", "train.eval_every=0", "deepspeed.zero_stage=0")
    if not (rm / "model" / "config.json").is_file():
        cli(
            "rm",
            "rm",
            rm,
            "train.epochs=3",
            "train.eval_every=0",
            "deepspeed.zero_stage=0",
            f"model.name_or_path={sft / 'model'}",
        )
    return {"sft": sft / "model", "rm": rm / "model"}


def heldout_rewards(
    models: Dict[str, Path], rm: Path, out: Path, samples: int, seed: int
) -> Dict[str, float]:
    """The RM's mean reward of each model's answers to the held-out toy prompts."""
    spec = ",".join(f"{name}={path}" for name, path in models.items())
    cmd = [
        sys.executable,
        "-m",
        "rlhf_dist.cli",
        "eval",
        "--models",
        spec,
        "--reward-model",
        str(rm),
        "--prompts",
        "toy",
        "--n-samples-per-prompt",
        str(samples),
        "--max-new-tokens",
        "24",
        "--seed",
        str(seed),
        "--output-dir",
        str(out),
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"eval failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "eval.json").read_text())["metrics"]
    return {name: metrics[name]["reward_mean"] for name in models}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/online_dpo.py", description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iterations", type=int, default=20, help="online DPO iterations")
    p.add_argument(
        "--offline-steps",
        type=int,
        default=28,
        help="offline DPO optimiser steps (28 = the tiny config's 2 epochs)",
    )
    p.add_argument("--eval-samples", type=int, default=4, help="answers per held-out prompt")
    p.add_argument("--sft", help="an SFT policy directory (else trained here)")
    p.add_argument("--rm", help="a reward model directory (else trained here)")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    root = Path(args.out_dir)
    models = (
        {"sft": Path(args.sft), "rm": Path(args.rm)}
        if args.sft and args.rm
        else toy_models(root / "models")
    )
    common = [f"model.name_or_path={models['sft']}", f"seed={args.seed}", "checkpoint.save_every=0"]
    cases = {
        "offline": ("dpo", "dpo", [f"train.max_steps={args.offline_steps}", "train.eval_every=0"]),
        "online": (
            "online-dpo",
            "online_dpo",
            [f"ppo.iterations={args.iterations}", f"reward_model.name_or_path={models['rm']}"],
        ),
    }
    lines: Dict[str, List[dict]] = {name: [] for name in cases}
    for repeat in range(args.repeats):
        order = list(cases) if repeat % 2 == 0 else list(reversed(cases))
        runs, outs = {}, {}
        for name in order:
            job, config, extra = cases[name]
            outs[name] = root / f"r{repeat}" / name
            runs[name] = cli(job, config, outs[name], *common, *extra)
        rewards = heldout_rewards(
            {"sft": models["sft"], **{n: outs[n] / "model" for n in cases}},
            models["rm"],
            root / f"r{repeat}" / "eval",
            args.eval_samples,
            args.seed,
        )
        for name in cases:
            gain = rewards[name] - rewards["sft"]
            line = {
                "bench": "online_dpo",
                "case": name,
                "repeat": repeat,
                **runs[name],
                "heldout_reward": rewards[name],
                "sft_reward": rewards["sft"],
                "gain": gain,
                "gain_per_cpu_min": 60 * gain / runs[name]["cpu_s"],
                "unreliable": runs[name]["foreign_cores"] > FOREIGN_LIMIT,
            }
            lines[name].append(line)
            print(json.dumps(line), flush=True)
    ratios = sorted(
        on["gain_per_cpu_min"] / off["gain_per_cpu_min"]
        for on, off in zip(lines["online"], lines["offline"])
    )
    print(
        json.dumps(
            {
                "bench": "online_dpo_ratio",
                "ratio": "online/offline gain_per_cpu_min",
                "pairs": ratios,
                "min": ratios[0],
                "median": statistics.median(ratios),
                "max": ratios[-1],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""PPO throughput: the Ray system against the same maths in one process, and the critic-free
path against TRL's GRPOTrainer.  One JSON line per case, then one line per ratio.

    .venv/bin/python bench/ppo.py                     # every case, the issue's sizes
    .venv/bin/python bench/ppo.py --cases ray,single --iterations 6
    .venv/bin/python bench/ppo.py --table results.jsonl   # markdown table of such a run

Cases (each in its own process, run one after the other):

* ``ray``: the real driver, ``rlhf_dist.trainers.ppo.PPOTrainer``, on a local Ray instance
  with 4 groups (actor, critic, reward, reference), one rank each, ZeRO-0;
* ``inproc``: the same driver and the same role workers (DeepSpeed engines) called directly in
  one process — no Ray, no groups: ``ray``/``inproc`` is the pure orchestration cost;
* ``single``: a reference loop written for the benchmark (``bench/_ppo_single.py``): plain HF
  modules and ``torch.optim.AdamW`` with the learners' settings, the library's rollout /
  scoring / advantage / loss functions, one process;
* ``ray_grpo``, ``single_grpo``: the same with ``ppo.advantage_estimator=group_norm`` (GRPO,
  ``--group-size`` samples per prompt, no critic group);
* ``ray_vllm``, ``ray_grpo_vllm``: ``ray`` and ``ray_grpo`` with ``rollout.backend=vllm``
  (one vLLM engine; the weight sync is its own phase, ``sync``; needs the ``[vllm]`` extra);
* ``ray_grpo_async1_vllm``, ``ray_grpo_async2_vllm``: ``ray_grpo_vllm`` with
  ``rollout.max_staleness`` 1 and 2 (the engine samples the next batches while the actor
  trains; ``generate`` is then the learner's wait for a batch); ``ray_async1_vllm``,
  ``ray_async2_vllm``: the same for ``ray_vllm`` (PPO with a critic and the reward model);
* ``ray_grpo_lora``: ``ray_grpo`` with a LoRA actor (``_ppo_common.LORA``), whose base with
  the adapter off is the reference: no reference group (3 groups instead of 4);
* ``ray_grpo_ref_in_actor``: ``ray_grpo`` with ``resources.reference_in_actor=true``: the
  reference is a second, frozen engine in the actor's process (no reference group);
* ``trl_grpo``: TRL's ``GRPOTrainer`` (optional ``bench`` extra) on the same weights, toy
  tokenizer, prompts (in the same order), generation length and group size, scored by the same
  reward model through a Python reward function (``bench/_ppo_trl.py``).

``--reward verifier`` (GRPO cases): no reward model on either side; both score the decoded
answers with the same built-in verifier (``regex_format``, ``_ppo_common.VERIFIER``) -- ours
through ``ppo.rewards`` on the driver, TRL's as its reward function.

Same workload everywhere: the prompts of each iteration, the sampling parameters, generation
exactly ``--max-new-tokens`` long (``rollout.min_new_tokens`` = max: EOS masked until then),
micro-batches, minibatches, epochs and optimiser settings.
1 torch thread per process.  Per iteration: wall seconds split into generate / score / learn,
and CPU seconds of the case's whole process tree (for Ray: the driver, the role workers and
Ray's own daemons, read from /proc through psutil) — on a shared 2-core machine CPU seconds
are the steadier measure.  The first ``--warmup`` iterations are left out of the averages.
Tokens are attention-mask tokens of the iteration's sequences (prompt + response).
Each case's line also carries ``foreign_cores`` (other processes' CPU during its measured
iterations) and ``probe_gflops``, the machine's speed before and after it
(``bench/_load.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _ppo_common as C  # noqa: E402
from _load import pair_spread, speed_probe  # noqa: E402

CASES = (
    "ray",
    "inproc",
    "single",
    "ray_grpo",
    "single_grpo",
    "trl_grpo",
    "ray_vllm",
    "ray_grpo_vllm",
    "ray_grpo_async1_vllm",
    "ray_grpo_async2_vllm",
    "ray_async1_vllm",
    "ray_async2_vllm",
    "ray_grpo_lora",
    "ray_grpo_ref_in_actor",
)
TARGET = 1.25  # issue 4: the Ray system within 1.25x of the single-process loop
# (numerator, denominator, kind): "slowdown" = time ratio, "speed" = tokens/s ratio
RATIOS = (
    ("ray", "single", "slowdown"),
    ("ray", "inproc", "slowdown"),
    ("inproc", "single", "slowdown"),
    ("ray_grpo", "single_grpo", "slowdown"),
    ("ray_grpo", "trl_grpo", "speed"),
    ("single_grpo", "trl_grpo", "speed"),
    ("ray_vllm", "ray", "slowdown"),
    ("ray_grpo_vllm", "ray_grpo", "slowdown"),
    ("ray_grpo_async1_vllm", "ray_grpo_vllm", "slowdown"),
    ("ray_grpo_async2_vllm", "ray_grpo_vllm", "slowdown"),
    ("ray_async1_vllm", "ray_vllm", "slowdown"),
    ("ray_async2_vllm", "ray_vllm", "slowdown"),
    ("ray_grpo_lora", "ray_grpo", "slowdown"),
    ("ray_grpo_ref_in_actor", "ray_grpo", "slowdown"),
    ("ray_grpo_ref_in_actor", "trl_grpo", "speed"),
)


VERIFIER_CASES = (
    "ray_grpo",
    "ray_grpo_vllm",
    "ray_grpo_async1_vllm",
    "ray_grpo_async2_vllm",
    "ray_grpo_ref_in_actor",
    "trl_grpo",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/ppo.py", description=__doc__.split("\n")[0])
    p.add_argument(
        "--cases",
        default=",".join(c for c in CASES if not c.endswith("_vllm")),
        help=f"comma list of {', '.join(CASES)} (default: all but the vLLM ones)",
    )
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2, help="first iterations not averaged")
    p.add_argument("--repeats", type=int, default=1, help="run the case list this many times")
    p.add_argument("--prompts", type=int, default=16, help="prompts per iteration (PPO)")
    p.add_argument("--grpo-prompts", type=int, default=4, help="prompts per iteration (GRPO)")
    p.add_argument("--group-size", type=int, default=4, help="samples per prompt (GRPO)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--max-prompt-length", type=int, default=64)
    p.add_argument("--ppo-epochs", type=int, default=1)
    p.add_argument("--mini-batch", type=int, default=8, help="rows per optimiser step")
    p.add_argument("--micro-batch", type=int, default=8, help="rows per forward")
    p.add_argument("--lr", type=float, default=1e-4, help="actor and critic learning rate")
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--num-prompts", type=int, default=300, help="data.toy.num_prompts")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--reward",
        choices=("rm", "verifier"),
        default="rm",
        help="rm: a reward model scores the answers; verifier: the built-in "
        "regex_format verifier on the decoded answers, no reward model "
        f"(GRPO cases only: {', '.join(VERIFIER_CASES)})",
    )
    p.add_argument(
        "--logprobs-from-generate",
        action="store_true",
        help="rollout.logprobs_from_generate=true for our cases: the behaviour "
        "log-probs read from generate's forwards (TRL is unaffected)",
    )
    p.add_argument(
        "--probe-idle",
        type=float,
        default=3.0,
        help="seconds of idle CPU measured after the last iteration (driver cases)",
    )
    p.add_argument("--out-dir", default=str(REPO / "outputs" / "bench" / "ppo"))
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    p.add_argument("--run-case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        p.error(f"--cases: unknown {unknown}; valid: {', '.join(CASES)}")
    if args.reward == "verifier":
        wrong = [c for c in args.cases if c not in VERIFIER_CASES]
        if wrong:
            p.error(
                f"--reward verifier: only the GRPO cases {', '.join(VERIFIER_CASES)} (not {wrong})"
            )
    if not 0 <= args.warmup < args.iterations:
        p.error(f"--warmup {args.warmup} must be in [0, --iterations={args.iterations})")
    return args


def estimator_of(case: str) -> str:
    return "group_norm" if "_grpo" in case else "gae"


# --------------------------------------------------------------------------- cases


def run_case_here(args) -> int:
    """Child process: run one case, print its JSON line (everything else goes to stderr)."""
    C.single_thread()
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        record = run_case(args)
    print(json.dumps(C.rounded(record)), file=stdout, flush=True)
    return 0


def run_case(args) -> dict:
    case = args.run_case
    out_dir = str(Path(args.out_dir) / case)
    if case.startswith("ray") or case == "inproc":
        import _ppo_driver

        record = _ppo_driver.run_driver(args, case, out_dir)
    elif case in ("single", "single_grpo"):
        import _ppo_single

        record = _ppo_single.run(args, C.load_bench_config(args, estimator_of(case), out_dir))
    else:
        try:
            import trl  # noqa: F401
        except ImportError:
            return {
                "bench": "ppo",
                "case": case,
                "skipped": "trl is not installed (pip install -e '.[bench]'): no TRL case",
            }
        import _ppo_trl

        record = _ppo_trl.run(args, C.load_bench_config(args, estimator_of(case), out_dir))
    import torch

    group = estimator_of(case) != "gae"
    workload = {
        "model": f"{args.layers}x{args.hidden} heads {args.heads} mlp {args.intermediate}",
        "prompts": args.grpo_prompts if group else args.prompts,
        "samples_per_prompt": args.group_size if group else 1,
        "mini_batch": args.mini_batch,
        "micro_batch": args.micro_batch,
        "ppo_epochs": args.ppo_epochs,
    }
    head = {
        "bench": "ppo",
        "case": case,
        "estimator": estimator_of(case),
        "reward": args.reward,
        "max_new_tokens": args.max_new_tokens,
        "workload": workload,
        "torch_threads": torch.get_num_threads(),
        "logprobs_from_generate": args.logprobs_from_generate and case != "trl_grpo",
    }
    return {**head, **record}


def spawn(args, case: str, repeat: int, argv: List[str]) -> dict:
    log = Path(args.out_dir) / f"{case}.r{repeat}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.setdefault("WANDB_MODE", "disabled")
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--run-case", case]
    print(f"[bench/ppo] {case} (repeat {repeat}): log {log}", file=sys.stderr, flush=True)
    probe = speed_probe()
    start, load = time.perf_counter(), os.getloadavg()[0]
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(
                cmd,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=fh,
                text=True,
                timeout=args.timeout,
            )
            code, out = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as err:
            code, out = 124, err.stdout or ""
            out = out.decode() if isinstance(out, bytes) else out
    lines = []
    for line in out.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    if code != 0 or not lines:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        record = {
            "bench": "ppo",
            "case": case,
            "error": f"exit code {code}",
            "log": str(log),
            "log_tail": "\n".join(tail),
        }
    else:
        record = lines[-1]
    record.update(
        repeat=repeat,
        run_wall_s=round(time.perf_counter() - start, 1),
        loadavg_1m_start=round(load, 2),
        probe_gflops=[round(probe, 2), round(speed_probe(), 2)],
    )
    return record


def median_of(records: List[dict], key: str) -> Optional[float]:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def ratio_lines(by_case: Dict[str, List[dict]]) -> List[dict]:
    """Medians over repeats, then ratios: ``slowdown`` = numerator's seconds (wall, CPU) per
    iteration over the denominator's (the issue's target: <= 1.25 for ray/single);
    ``speed`` = numerator's tokens/s (wall, per CPU-second) over the denominator's."""
    lines = []
    for num, den, kind in RATIOS:
        a, b = by_case.get(num, []), by_case.get(den, [])
        if not a or not b:
            continue
        line = {
            "bench": "ppo_ratio",
            "ratio": f"{num}/{den}",
            "kind": kind,
            "repeats": min(len(a), len(b)),
        }
        if kind == "slowdown":
            for key in ("s_per_iter", "s_per_iter_median", "cpu_s_per_iter"):
                line[key] = median_of(a, key) / median_of(b, key)
            if num == "ray" and den == "single":
                line.update(
                    target=TARGET,
                    meets_target_wall=line["s_per_iter"] <= TARGET,
                    meets_target_cpu=line["cpu_s_per_iter"] <= TARGET,
                )
        else:
            for key in ("tokens_per_s", "tokens_per_cpu_s", "samples_per_s"):
                line[key] = median_of(a, key) / median_of(b, key)
        line.update(
            pair_spread(a, b, "cpu_s_per_iter" if kind == "slowdown" else "tokens_per_cpu_s")
        )
        lines.append(C.rounded(line))
    return lines


TABLE = (
    ("s / iter", "s_per_iter"),
    ("median s / iter", "s_per_iter_median"),
    ("generate s", "time_generate_s"),
    ("score s", "time_score_s"),
    ("learn s", "time_learn_s"),
    ("CPU-s / iter", "cpu_s_per_iter"),
    ("CPU-s generate / score / learn", None),
    ("samples/s", "samples_per_s"),
    ("tokens/s", "tokens_per_s"),
    ("**tokens / CPU-s**", "tokens_per_cpu_s"),
)


def markdown_table(path: str) -> str:
    """The results table (medians over repeats) of a JSON-lines file this script wrote."""
    rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.startswith("{")]
    by_case: Dict[str, List[dict]] = {}
    for r in rows:
        if r.get("bench") == "ppo" and "error" not in r and "skipped" not in r:
            by_case.setdefault(r["case"], []).append(r)
    out = [
        "| case | implementation | " + " | ".join(h for h, _ in TABLE) + " |",
        "|---|---|" + "---:|" * len(TABLE),
    ]
    for case in [c for c in CASES if c in by_case]:
        recs = by_case[case]
        cells = []
        for _, key in TABLE:
            if key is None:
                cells.append(
                    " / ".join(
                        f"{median_of(recs, f'cpu_{p}_s'):.2f}"
                        for p in ("generate", "score", "learn")
                    )
                )
            else:
                value = median_of(recs, key)
                cells.append(f"{value:.0f}" if value >= 100 else f"{value:.2f}")
        out.append(f"| {case} | {recs[0]['impl']} | " + " | ".join(cells) + " |")
    for r in rows:
        if r.get("bench") == "ppo_ratio":
            values = ", ".join(
                f"{k} {v}" for k, v in r.items() if k not in ("bench", "ratio", "kind", "repeats")
            )
            out.append(f"\n{r['ratio']} ({r['kind']}, {r['repeats']} repeats): {values}")
    return "\n".join(out)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--table"]:
        print(markdown_table(argv[1]))
        return 0
    args = parse_args(argv)
    if args.run_case:
        return run_case_here(args)
    by_case: Dict[str, List[dict]] = {}
    for repeat in range(args.repeats):
        for case in args.cases:
            record = spawn(args, case, repeat, argv)
            print(json.dumps(record), flush=True)
            if "error" not in record and "skipped" not in record:
                by_case.setdefault(case, []).append(record)
    for line in ratio_lines(by_case):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

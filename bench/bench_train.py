"""Training throughput and per-rank memory of SFT and DPO; one JSON line per case on stdout.

    .venv/bin/python bench/bench_train.py                    # SFT+DPO x ZeRO 0/2/3 x 1/2 ranks
    .venv/bin/python bench/bench_train.py --with-trl         # + TRL's DPOTrainer, same workload
    .venv/bin/python bench/bench_train.py --jobs dpo --zero 3 --ranks 2
    .venv/bin/python bench/bench_train.py --zero 0 --ranks 1 --variants default,lora --repeats 3
    .venv/bin/python bench/bench_train.py --jobs dpo --zero 0 --ranks 1 --with-trl \
        --variants padded,default,grouped,grouped+precomputed --trl-precompute

The workload is ``bench/train_config.yaml`` (tiny llama 4 x 256, 256 toy preference pairs, max
length 128); the flags below override its sizes.  1 rank runs as a plain process, 2 ranks
through the deepspeed launcher (``deepspeed --num_gpus N --master_port P bench/_rank_entry.py
…``), each rank with ``--threads`` torch threads (1 by default: an OpenMP thread that waits
for a busy core spins, which makes both wall and CPU time erratic on a shared machine).
Every run is the real ``SFTTrainer``/``DPOTrainer`` (see ``_rank_entry.py``); throughput is
read from the run's ``metrics.jsonl`` (``perf/tokens_per_s`` × ``perf/step_time_s`` =
attention-mask tokens of all ranks in the step), averaged over the steps after ``--warmup``:

* ``tokens_per_s``: Σ tokens / Σ step time (the trainer's own step window);
* ``tokens_per_s_median``: median of the per-step rates (robust to a noisy machine);
* ``tokens_per_s_wall``: Σ tokens / wall time between step ends on rank 0 (adds logging);
* ``tokens_per_cpu_s``: Σ tokens / CPU seconds of all ranks' processes over the same span —
  far steadier than wall time when other jobs share the cores (wall time then counts the
  seconds a rank waited for a core; CPU time does not).

``--variants`` runs each DPO case once per named set of overrides (``VARIANTS``: the padded
pair layout, the default shared-prompt layout with length-grouped batches, ``ungrouped``:
``train.group_by_length=false``, + precomputed reference log-probs, ``lora``: LoRA r=16
adapters, the DPO reference the adapter-free base, ``packed``: ``train.padding_free``);
``default``, ``lora`` and ``packed`` apply to SFT too; each record names its ``variant``,
and ``train_variant_ratio`` lines compare each variant with ``default`` (tokens per
CPU-second and per second, per-rank parameter + optimizer + reference-copy MiB).
``--repeats R`` runs the whole list R times (TRL after each pass); the ratio lines use
medians over the repeats and give the spread of the repeat-paired ratios (``spread_*``:
min / median / max).  Each record carries ``foreign_cores``, the CPU other processes used
while it ran (``bench/_load.py``); a ratio whose lines saw more than 0.2 cores of it says
``"unreliable": true``; and ``probe_gflops``, the machine's speed just before and after it
(``_load.speed_probe``), which on a shared VM moves more than that load shows.

Memory per rank: ``peak_rss_mb_per_rank`` (``ru_maxrss`` at the end of the run, imports
included), and the parameter / optimizer MiB each rank holds (``_rank_entry.py`` explains the
counting).  ``--with-trl`` also runs ``bench/trl_dpo.py`` on the same pairs and prints a
``train_ratio`` line: rlhf_dist DPO tokens/s over TRL's, one rank.  No assertions: a case that
fails prints a line with ``"error"`` and the run continues.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _load import ForeignLoad, speed_probe  # noqa: E402
from _train_lines import (  # noqa: E402
    emit,
    memory_ratio_lines,
    ratio_lines,
    variant_ratio_lines,
)

CONFIG = HERE / "train_config.yaml"
# DPO variants: overrides on top of the workload (the default layout is shared_prompt)
VARIANTS = {
    "padded": ["dpo.layout=padded"],
    "default": [],
    # the plain shuffled order (HF/TRL's default), not the default length-grouped one
    "ungrouped": ["train.group_by_length=false"],
    "precomputed": ["dpo.precompute_ref=true"],
    # LoRA adapters on every linear layer (SFT and DPO; DPO's reference = the adapter-free base)
    "lora": ["model.lora.r=16", "model.lora.alpha=32"],
    # each micro-batch's sequences in one row, no padding (SFT and DPO: dpo.layout=packed)
    "packed": ["train.padding_free=true"],
}
SFT_VARIANTS = ("default", "lora", "packed")  # the variants that apply to SFT too


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/bench_train.py", description=__doc__.split("\n")[0])
    csv = lambda kind: lambda s: [kind(x) for x in s.split(",") if x]  # noqa: E731
    p.add_argument("--jobs", type=csv(str), default=["sft", "dpo"], help="comma list: sft,dpo")
    p.add_argument("--zero", type=csv(int), default=[0, 2, 3], help="comma list of ZeRO stages")
    p.add_argument("--ranks", type=csv(int), default=[1, 2], help="comma list of rank counts")
    p.add_argument("--steps", type=int, default=32, help="optimiser steps per run")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the averages")
    p.add_argument(
        "--batch",
        type=int,
        default=8,
        help="DPO pairs per optimiser step over all ranks; SFT uses 2x as many "
        "sequences, so both forward the same number of rows",
    )
    p.add_argument("--pairs", type=int, default=256, help="data.max_samples (training rows)")
    p.add_argument("--num-prompts", type=int, default=300, help="data.toy.num_prompts")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--max-prompt-length", type=int, default=64)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per rank (0: cores // ranks, at least 1); 1 by default "
        "so that CPU time stays meaningful on a shared machine",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run every case (and TRL) this many times, interleaved",
    )
    p.add_argument(
        "--variants",
        type=csv(str),
        default=["default"],
        help=f"comma list of DPO variants: {', '.join(VARIANTS)}",
    )
    p.add_argument("--with-trl", action="store_true", help="also run TRL's DPOTrainer (1 rank)")
    p.add_argument(
        "--trl-precompute",
        action="store_true",
        help="with --with-trl: also run TRL with precompute_ref_log_probs=True "
        "(reported, not used in the ratio lines)",
    )
    p.add_argument(
        "--trl-python",
        default=sys.executable,
        help="python of an environment with trl (and rlhf_dist) installed",
    )
    p.add_argument(
        "--out-dir",
        default=str(REPO / "outputs" / "bench"),
        help="run directories, logs and rank statistics go here",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = p.parse_args(argv)
    for job in args.jobs:
        if job not in ("sft", "dpo"):
            p.error(f"--jobs: unknown job {job!r} (sft, dpo)")
    for variant in args.variants:
        if variant not in VARIANTS:
            p.error(f"--variants: unknown variant {variant!r} ({', '.join(VARIANTS)})")
    if not 0 <= args.warmup < args.steps:
        p.error(f"--warmup {args.warmup} must be in [0, --steps={args.steps})")
    return args


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def threads_per_rank(args, ranks: int) -> int:
    return args.threads or max(1, (os.cpu_count() or 1) // ranks)


def overrides(args, job: str, zero: int, ranks: int, out: Path) -> List[str]:
    """The ``key=value`` list of one run (on top of ``--config``)."""
    global_batch = args.batch * (2 if job == "sft" else 1)
    if global_batch % ranks:
        raise ValueError(f"--batch {global_batch} ({job}) does not split over {ranks} ranks")
    return [
        f"output_dir={out}",
        f"deepspeed.zero_stage={zero}",
        f"train.max_steps={args.steps}",
        f"train.train_batch_size={global_batch}",
        f"train.micro_batch_size={global_batch // ranks}",
        f"model.tiny.hidden_size={args.hidden}",
        f"model.tiny.num_layers={args.layers}",
        f"model.tiny.num_heads={args.heads}",
        f"model.tiny.intermediate_size={args.intermediate}",
        f"data.max_samples={args.pairs}",
        f"data.toy.num_prompts={args.num_prompts}",
        f"data.max_length={args.max_length}",
        f"data.max_prompt_length={args.max_prompt_length}",
        *args.overrides,
    ]


def command(args, job: str, ranks: int, stats: Path, keyvals: List[str]) -> List[str]:
    entry = [
        str(HERE / "_rank_entry.py"),
        "--stats-dir",
        str(stats),
        job,
        "-c",
        args.config,
        *keyvals,
    ]
    if ranks == 1:
        return [sys.executable, *entry]
    launcher = str(Path(sys.executable).with_name("deepspeed"))
    return [launcher, "--num_gpus", str(ranks), "--master_port", str(free_port()), *entry]


def read_jsonl(path: Path) -> List[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def throughput(rows: List[dict], ranks_stats: List[dict], warmup: int) -> Dict[str, float]:
    """Averages of the steps after ``warmup`` from metrics.jsonl rows and the ranks' step-end
    clocks (see module docstring)."""
    steps = sorted((r for r in rows if "perf/tokens_per_s" in r), key=lambda r: r["step"])
    times = [r["perf/step_time_s"] for r in steps]
    tokens = [r["perf/tokens_per_s"] * t for r, t in zip(steps, times)]
    tok, tim = tokens[warmup:], times[warmup:]
    if not tok:
        raise ValueError(f"only {len(steps)} logged steps, --warmup {warmup}")
    out = {
        "tokens_per_s": sum(tok) / sum(tim),
        "tokens_per_s_median": statistics.median(a / b for a, b in zip(tok, tim)),
        "tokens_per_step": sum(tok) / len(tok),
        "step_time_s_mean": sum(tim) / len(tim),
        "steps": len(steps),
    }
    span = lambda ends: ends[-1] - (ends[warmup - 1] if warmup else 0.0)  # noqa: E731
    if all(len(s["step_end_s"]) == len(steps) for s in ranks_stats):
        out["tokens_per_s_wall"] = sum(tok) / span(ranks_stats[0]["step_end_s"])
        out["tokens_per_cpu_s"] = sum(tok) / sum(span(s["step_end_cpu_s"]) for s in ranks_stats)
    return out


def run_logged(cmd: List[str], env: Dict[str, str], log: Path, timeout: float) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        try:
            return subprocess.run(
                cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return 124


def run_measured(cmd: List[str], env: Dict[str, str], log: Path, timeout: float):
    """``run_logged`` plus what the machine did meanwhile: (exit code, {run_wall_s,
    loadavg_1m_start, foreign_cores, probe_gflops: [before, after]})."""
    probe = speed_probe()
    start, load = time.perf_counter(), os.getloadavg()[0]
    with ForeignLoad() as foreign:
        code = run_logged(cmd, env, log, timeout)
    return code, {
        "run_wall_s": round(time.perf_counter() - start, 2),
        "loadavg_1m_start": round(load, 2),
        "foreign_cores": round(foreign.cores, 3),
        "probe_gflops": [round(probe, 2), round(speed_probe(), 2)],
    }


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_case(
    args, job: str, zero: int, ranks: int, repeat: int = 0, variant: str = "default"
) -> Optional[dict]:
    name = f"{job}-zero{zero}-ranks{ranks}" + ("" if variant == "default" else f"-{variant}")
    out = Path(args.out_dir) / name
    stats_dir = out / "bench_stats"
    for stale in list(stats_dir.glob("rank*.json")) + [out / "metrics.jsonl"]:
        stale.unlink(missing_ok=True)
    threads = threads_per_rank(args, ranks)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.setdefault("WANDB_MODE", "disabled")
    record = {
        "bench": "train",
        "impl": "rlhf_dist",
        "job": job,
        "zero": zero,
        "ranks": ranks,
        "repeat": repeat,
        "variant": variant,
    }
    cmd = command(
        args, job, ranks, stats_dir, overrides(args, job, zero, ranks, out) + VARIANTS[variant]
    )
    print(f"[bench] {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    code, machine = run_measured(cmd, env, out / "bench.log", args.timeout)
    record.update(machine)
    ranks_stats = [json.loads(p.read_text()) for p in sorted(stats_dir.glob("rank*.json"))]
    if code != 0 or len(ranks_stats) != ranks or not (out / "metrics.jsonl").exists():
        record.update(
            error=f"exit code {code}, {len(ranks_stats)}/{ranks} rank stats",
            log=str(out / "bench.log"),
            log_tail=tail(out / "bench.log"),
        )
        emit(record)
        return None
    ranks_stats.sort(key=lambda s: s["rank"])
    record.update(throughput(read_jsonl(out / "metrics.jsonl"), ranks_stats, args.warmup))
    per_rank = lambda key: [round(s[key], 3) for s in ranks_stats if key in s]  # noqa: E731
    record.update(
        warmup=args.warmup,
        threads_per_rank=[s["threads"] for s in ranks_stats],
        peak_rss_mb_per_rank=per_rank("maxrss_mb"),
        param_mb_per_rank=per_rank("param_mb"),
        optim_mb_per_rank=per_rank("optim_mb"),
        optim_state_mb_per_rank=per_rank("optim_state_mb"),
        optim_master_mb_per_rank=per_rank("optim_master_mb"),
        param_numel_local=[s["param_numel_local"] for s in ranks_stats],
        param_numel_total=ranks_stats[0]["param_numel_total"],
    )
    if job == "dpo":
        record["ref_param_mb_per_rank"] = per_rank("ref_param_mb")
        precompute = [
            r["perf/ref_precompute_s"]
            for r in read_jsonl(out / "metrics.jsonl")
            if "perf/ref_precompute_s" in r
        ]
        if precompute:
            record["ref_precompute_s"] = precompute[0]
    emit(record)
    return record


# --------------------------------------------------------------------------- TRL


def export_pairs(args, path: Path) -> str:
    """Write rlhf_dist's training pairs in the order its trainer visits them on one rank;
    return the toy tokenizer's directory."""
    from rlhf_dist.config import load_config
    from rlhf_dist.data import build_preference_dataset
    from rlhf_dist.toy import toy_tokenizer_path
    from rlhf_dist.models import load_tokenizer
    from rlhf_dist.trainers.batches import epoch_order

    cfg = load_config(args.config, overrides(args, "dpo", 0, 1, path.parent))
    tokenizer = load_tokenizer(cfg.model, field_prefix="model")
    pairs = build_preference_dataset(cfg.data, tokenizer, split="train")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for i in epoch_order(len(pairs), cfg.seed, 0):
            ex, n = pairs[i], pairs[i]["prompt_len"]
            if ex["chosen_input_ids"][:n] != ex["rejected_input_ids"][:n]:
                raise ValueError(f"pair {i}: chosen and rejected prompts differ")
            fh.write(
                json.dumps(
                    {
                        "prompt_ids": ex["chosen_input_ids"][:n],
                        "chosen_ids": ex["chosen_input_ids"][n:],
                        "rejected_ids": ex["rejected_input_ids"][n:],
                    }
                )
                + "\n"
            )
    return str(toy_tokenizer_path())


def run_trl(args, repeat: int = 0, precompute: bool = False) -> Optional[dict]:
    out = Path(args.out_dir) / ("trl-dpo-ranks1" + ("-precompute-ref" if precompute else ""))
    rows = out / "pairs.jsonl"
    tokenizer_dir = export_pairs(args, rows)
    cfg = read_config_values(args)
    cmd = [
        args.trl_python,
        str(HERE / "trl_dpo.py"),
        "--rows",
        str(rows),
        "--tokenizer",
        tokenizer_dir,
        "--out-dir",
        str(out / "trainer"),
        "--hidden",
        str(args.hidden),
        "--layers",
        str(args.layers),
        "--heads",
        str(args.heads),
        "--intermediate",
        str(args.intermediate),
        "--seed",
        str(cfg["seed"]),
        "--batch",
        str(args.batch),
        "--max-length",
        str(args.max_length),
        "--beta",
        str(cfg["beta"]),
        "--lr",
        str(cfg["lr"]),
        "--adam-betas",
        *(str(b) for b in cfg["adam_betas"]),
        "--attn",
        cfg["attn"],
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        *(["--precompute-ref"] if precompute else []),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads_per_rank(args, 1)), PYTHONUNBUFFERED="1")
    print(f"[bench] trl: {' '.join(cmd)}", file=sys.stderr, flush=True)
    code, machine = run_measured(cmd, env, out / "bench.log", args.timeout)
    lines = [
        line
        for line in tail(out / "bench.log", 400).splitlines()
        if line.startswith('{"bench": "train"')
    ]
    if code != 0 or not lines:
        emit(
            {
                "bench": "train",
                "impl": "trl",
                "job": "dpo",
                "ranks": 1,
                "repeat": repeat,
                "error": f"exit code {code}",
                "log": str(out / "bench.log"),
                "log_tail": tail(out / "bench.log"),
            }
        )
        return None
    record = json.loads(lines[-1])
    record.update(repeat=repeat, **machine)
    emit(record)
    return record


def read_config_values(args) -> dict:
    from rlhf_dist.config import load_config

    cfg = load_config(args.config, args.overrides)
    return {
        "seed": cfg.seed,
        "beta": cfg.dpo.beta,
        "lr": cfg.train.lr,
        "adam_betas": list(cfg.train.adam_betas),
        "attn": cfg.model.attn_implementation,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    ours, trls, trls_precomputed = [], [], []
    for repeat in range(args.repeats):
        for job in args.jobs:
            for ranks in args.ranks:
                for zero in args.zero:
                    for variant in [
                        v for v in args.variants if job == "dpo" or v in SFT_VARIANTS
                    ] or ["default"]:
                        rec = run_case(args, job, zero, ranks, repeat, variant)
                        if rec is not None:
                            ours.append(rec)
        trl = run_trl(args, repeat) if args.with_trl else None
        if trl is not None:
            trls.append(trl)
        if args.with_trl and args.trl_precompute:
            trl = run_trl(args, repeat, precompute=True)
            if trl is not None:
                trls_precomputed.append(trl)
    ratio_lines(ours, trls)
    ratio_lines(
        [r for r in ours if "precomputed" in r.get("variant", "")],
        trls_precomputed,
        " precompute_ref_log_probs",
    )
    memory_ratio_lines(ours)
    variant_ratio_lines(ours)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Markdown tables from the JSON lines of ``bench/run_all.sh`` (as pasted in RESULTS.md).

.venv/bin/python bench/make_table.py results.jsonl
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def fmt(value, digits=0):
    if value is None:
        return "–"
    if isinstance(value, list):
        return " / ".join(fmt(v, digits) for v in value)
    return f"{value:.{digits}f}"


def train_table(rows):
    groups = defaultdict(list)
    for r in rows:
        if r.get("bench") == "train" and "error" not in r:
            key = (
                r["impl"],
                r["job"],
                r["zero"],
                r["ranks"],
                bool(r.get("precompute_ref_log_probs")),
                r.get("variant", "default"),
            )
            groups[key].append(r)
    out = [
        "| impl | job | ZeRO | ranks | runs | tokens/s (step) | tokens/s (median step) | "
        "tokens/CPU-s | peak RSS MiB / rank | params MiB / rank | optimizer MiB / rank "
        "(states + fp32 master) | reference MiB / rank |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (impl, job, zero, ranks, pre, variant), recs in groups.items():

        def med(k, recs=recs):
            values = [r[k] for r in recs if k in r]
            return statistics.median(values) if values else None

        first = recs[0]
        name = (
            impl
            + (" (precompute_ref_log_probs)" if pre else "")
            + ("" if variant == "default" else f", {variant}")
        )
        optim = (
            "–"
            if "optim_mb_per_rank" not in first
            else f"{fmt(first['optim_mb_per_rank'], 1)} "
            f"({fmt(first['optim_state_mb_per_rank'], 1)} + "
            f"{fmt(first['optim_master_mb_per_rank'], 1)})"
        )
        out.append(
            f"| {name} | {job} | {fmt(zero) if zero is not None else '–'} | {ranks} | "
            f"{len(recs)} | {fmt(med('tokens_per_s'))} | "
            f"{fmt(med('tokens_per_s_median'))} | {fmt(med('tokens_per_cpu_s'))} | "
            f"{fmt(first.get('peak_rss_mb_per_rank'))} | "
            f"{fmt(first.get('param_mb_per_rank'), 1)} | {optim} | "
            f"{fmt(first.get('ref_param_mb_per_rank'), 1)} |"
        )
    return out


def ratio_table(rows):
    out = [
        "| rlhf_dist DPO, 1 rank, ZeRO | variant | vs | repeats | tokens/s (step) | "
        "tokens/s (median step) | tokens/s (wall) | tokens/CPU-s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("bench") == "train_ratio":
            out.append(
                f"| {r['zero']} | {r.get('variant', 'default')} | {r['vs']} | "
                f"{r['repeats']} | "
                f"{fmt(r.get('ratio_tokens_per_s'), 2)} | "
                f"{fmt(r.get('ratio_tokens_per_s_median'), 2)} | "
                f"{fmt(r.get('ratio_tokens_per_s_wall'), 2)} | "
                f"{fmt(r.get('ratio_tokens_per_cpu_s'), 2)} |"
            )
    return out


def memory_table(rows):
    out = [
        "| job | ranks | ZeRO | params + optimizer MiB / rank | ZeRO-0 | ratio | "
        "ratio without the fp32 master copy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("bench") == "train_memory_ratio":
            out.append(
                f"| {r['job']} | {r['ranks']} | {r['zero']} | "
                f"{fmt(r['param_plus_optim_mb'], 1)} | "
                f"{fmt(r['zero0_param_plus_optim_mb'], 1)} | {fmt(r['ratio'], 2)} | "
                f"{fmt(r['ratio_without_fp32_master'], 2)} |"
            )
    return out


def profile_tables(rows):
    out = []
    for r in rows:
        if r.get("bench") == "profile_dpo" and r["kind"] == "sections":
            out += [
                "| section of rlhf_dist's DPO step (ZeRO-0, 1 rank, 1 thread) | CPU s / step "
                "| share |",
                "|---|---|---|",
            ]
            for k, v in r["cpu_s_per_step_by_section"].items():
                out.append(f"| {k} | {v:.3f} | {100 * r['cpu_share'][k]:.1f}% |")
            out.append("")
    variants = [r for r in rows if r.get("bench") == "profile_dpo" and r["kind"] == "variant"]
    if variants:
        out += [
            "| variant | tokens/CPU-s | vs trainer (CPU) | tokens/s | vs trainer (wall) | "
            "positions / token | ref pre-pass s | max abs diff vs padded |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in variants:
            out.append(
                f"| {r['variant']} | {fmt(r['tokens_per_cpu_s_median'])} | "
                f"{fmt(r['cpu_vs_first'], 2)} | {fmt(r['tokens_per_s_median'])} | "
                f"{fmt(r['wall_vs_first'], 2)} | "
                f"{fmt(r.get('positions_per_token'), 2)} | "
                f"{fmt(r.get('precompute_ref_s'), 2)} | "
                f"{r.get('max_abs_diff_vs_padded', '–')} |"
            )
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rows = []
    for path in argv or ["/dev/stdin"]:
        with open(path) as fh:
            rows += [json.loads(line) for line in fh if line.startswith("{")]
    for table in (train_table(rows), ratio_table(rows), memory_table(rows), profile_tables(rows)):
        if len(table) > 2:
            print("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

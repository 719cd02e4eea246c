"""The summary lines of ``bench/bench_train.py``: rlhf_dist DPO over TRL, each variant over
``default``, ZeRO-3 memory over ZeRO-0 -- medians of the repeats with the spread of the
repeat-paired ratios (``_load.pair_spread``)."""

from __future__ import annotations

import json
import statistics
from typing import List, Optional

from _load import pair_spread

TRL_TARGET = 1.5


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


RATIO_KEYS = ("tokens_per_s", "tokens_per_s_median", "tokens_per_s_wall", "tokens_per_cpu_s")


def _median_of(records: List[dict], key: str) -> Optional[float]:
    values = [r[key] for r in records if key in r]
    return statistics.median(values) if values else None


def ratio_lines(ours: List[dict], trls: List[dict], trl_label: str = "") -> None:
    """rlhf_dist DPO (1 rank, each ZeRO stage and variant) over TRL, per metric, medians over
    repeats; the spread of the repeat-paired ratios (TRL runs right after each pass) and the
    load flag of :func:`_load.pair_spread`."""
    if not trls:
        return
    cases = sorted(
        {(r["zero"], r["variant"]) for r in ours if r["job"] == "dpo" and r["ranks"] == 1}
    )
    for zero, variant in cases:
        mine = [
            r
            for r in ours
            if r["job"] == "dpo"
            and r["ranks"] == 1
            and r["zero"] == zero
            and r["variant"] == variant
        ]
        line = {
            "bench": "train_ratio",
            "job": "dpo",
            "ranks": 1,
            "zero": zero,
            "variant": variant,
            "vs": f"trl {trls[0].get('trl_version')}{trl_label}",
            "repeats": len(mine),
            "target": TRL_TARGET,
        }
        for key in RATIO_KEYS:
            a, b = _median_of(mine, key), _median_of(trls, key)
            if a is not None and b:
                line[f"ratio_{key}"] = a / b
        line.update(_spreads(mine, trls))
        emit(line)


def _spreads(a: List[dict], b: List[dict]) -> dict:
    """Repeat-paired ratios of ``a`` over ``b`` per CPU-second and in wall time."""
    keys = [k for k in ("tokens_per_cpu_s", "tokens_per_s") if all(k in r for r in a + b)]
    return {f"spread_{k}": pair_spread(a, b, k) for k in keys} if a and b else {}


def memory_ratio_lines(ours: List[dict]) -> None:
    """Per-rank (param + optimizer) MiB of ZeRO-3 over ZeRO-0, per job and rank count."""
    by_key = {
        (r["job"], r["zero"], r["ranks"]): r
        for r in ours
        if r["repeat"] == 0 and r["variant"] == "default"
    }
    for (job, zero, ranks), rec in by_key.items():
        base = by_key.get((job, 0, ranks))
        if zero == 0 or base is None:
            continue
        emit(
            {
                "bench": "train_memory_ratio",
                "job": job,
                "ranks": ranks,
                "zero": zero,
                "vs_zero": 0,
                "param_plus_optim_mb": _held(rec),
                "zero0_param_plus_optim_mb": _held(base),
                "ratio": _held(rec) / _held(base),
                "ratio_without_fp32_master": _held(rec, master=False) / _held(base, master=False),
            }
        )


def variant_ratio_lines(ours: List[dict]) -> None:
    """Each variant over ``default``, per job, ZeRO stage and rank count: tokens per
    CPU-second and per second (medians of the repeats, and the repeat-paired spread) and
    per-rank parameter + optimizer (+ DPO reference copy) MiB."""

    def records(case: tuple, variant: str) -> List[dict]:
        return [
            r for r in ours if (r["job"], r["zero"], r["ranks"], r["variant"]) == (*case, variant)
        ]

    def held(rec: dict) -> float:
        return _held(rec) + max(rec.get("ref_param_mb_per_rank") or [0.0])

    cases = sorted(
        {(r["job"], r["zero"], r["ranks"], r["variant"]) for r in ours if r["variant"] != "default"}
    )
    for job, zero, ranks, variant in cases:
        mine, base = records((job, zero, ranks), variant), records((job, zero, ranks), "default")
        if not base:
            continue
        line = {
            "bench": "train_variant_ratio",
            "job": job,
            "zero": zero,
            "ranks": ranks,
            "variant": variant,
            "vs": "default",
            "repeats": len(mine),
        }
        for key in ("tokens_per_cpu_s", "tokens_per_s"):
            line[f"ratio_{key}"] = _median_of(mine, key) / _median_of(base, key)
        line.update(
            _spreads(mine, base),
            held_mb=held(mine[0]),
            default_held_mb=held(base[0]),
            ratio_held_mb=held(mine[0]) / held(base[0]),
        )
        emit(line)


def _held(rec: dict, master: bool = True) -> float:
    """The largest per-rank parameter + optimizer MiB of a case (``master=False`` leaves out
    the fp32 master copy DeepSpeed's ZeRO-1/2/3 optimizers keep besides fp32 parameters)."""
    keys = ("param_mb_per_rank", "optim_state_mb_per_rank") + (
        ("optim_master_mb_per_rank",) if master else ()
    )
    return max(sum(vals) for vals in zip(*(rec[k] for k in keys)))

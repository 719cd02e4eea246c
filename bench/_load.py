"""The machine's load beside a benchmark case, and the spread of repeat-paired ratios
(``bench/ppo.py``, ``bench/bench_train.py``).

``foreign_cores`` is the CPU that processes outside the measured case used meanwhile, in
cores: the machine's busy CPU-seconds over the interval less the case's own, over the wall
time.  On a 2-core machine a case beside ``FOREIGN_LIMIT`` cores or more of other work is
flagged ``unreliable``: its wall time counts seconds it waited for a core, and even its CPU
time rises (shared caches, an OpenMP thread spinning while it waits).
"""
from __future__ import annotations

import resource
import statistics
import time
from typing import List

import psutil

FOREIGN_LIMIT = 0.2  # cores of other processes' CPU above which a case's line is unreliable


def machine_busy_s() -> float:
    """CPU seconds every process of the machine has used (all cores, all modes but idle and
    iowait)."""
    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class ForeignLoad:
    """``with ForeignLoad() as load: subprocess.run(...)`` -> ``load.cores``: other processes'
    CPU while the (waited-for) child process tree ran, in cores."""

    def __enter__(self) -> "ForeignLoad":
        self._start = time.perf_counter(), machine_busy_s(), _children_cpu_s()
        return self

    def __exit__(self, *exc) -> None:
        wall0, busy0, own0 = self._start
        wall = max(time.perf_counter() - wall0, 1e-9)
        own = _children_cpu_s() - own0
        self.cores = max(machine_busy_s() - busy0 - own, 0.0) / wall


def pair_spread(a: List[dict], b: List[dict], key: str) -> dict:
    """The ratio of ``key`` within each repeat (the two cases run back to back): min /
    median / max over the repeats, and whether any of their lines saw more than
    :data:`FOREIGN_LIMIT` cores of other processes' CPU (``unreliable``)."""
    by_repeat = {r["repeat"]: r for r in b}
    pairs = [(r, by_repeat[r["repeat"]]) for r in a if r["repeat"] in by_repeat]
    ratios = sorted(x[key] / y[key] for x, y in pairs)
    foreign = [r.get("foreign_cores", 0.0) for pair in pairs for r in pair]
    return {f"pairs_{key}": ratios, "pair_min": ratios[0], "pair_median":
            statistics.median(ratios), "pair_max": ratios[-1],
            "foreign_cores_max": max(foreign), "unreliable": max(foreign) > FOREIGN_LIMIT}

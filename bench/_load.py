"""The machine's load beside a benchmark case, its speed, and the spread of repeat-paired
ratios (``bench/ppo.py``, ``bench/bench_train.py``).

    .venv/bin/python bench/_load.py --probes 30     # the machine's speed, 30 times, 0.5 s apart

``foreign_cores`` is the CPU that processes outside the measured case used meanwhile, in
cores: the machine's busy CPU-seconds over the interval less the case's own, over the wall
time.  On a 2-core machine a case beside ``FOREIGN_LIMIT`` cores or more of other work is
flagged ``unreliable``: its wall time counts seconds it waited for a core, and even its CPU
time rises (shared caches, an OpenMP thread spinning while it waits).

``speed_probe`` is a fixed single-threaded float32 matmul loop timed in CPU seconds
(GFLOP/s).  On a shared VM it shows what no load figure inside the VM does: the same work
taking more CPU time when the host is busy (bench/RESULTS.md, 2026-12-04: 70.7–92.7 GFLOP/s
within 30 s on an idle 2-core VM).  bench_train.py records it before and after each case.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from typing import List, Optional

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

    clock = staticmethod(time.perf_counter)

    def __enter__(self) -> "ForeignLoad":
        self._start = self.clock(), machine_busy_s(), _children_cpu_s()
        return self

    def __exit__(self, *exc) -> None:
        wall0, busy0, own0 = self._start
        wall = max(self.clock() - wall0, 1e-9)
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
    return {
        f"pairs_{key}": ratios,
        "pair_min": ratios[0],
        "pair_median": statistics.median(ratios),
        "pair_max": ratios[-1],
        "foreign_cores_max": max(foreign),
        "unreliable": max(foreign) > FOREIGN_LIMIT,
    }


def speed_probe(rounds: int = 200) -> float:
    """GFLOP/s of a fixed (256 x 256) @ (256 x 1024) float32 matmul loop on one thread, timed
    in this process's CPU seconds (about 0.25 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.ones(256, 256), torch.ones(256, 1024)
        start = time.process_time()
        for _ in range(rounds):
            (a @ b).sum()
        return 2 * 256 * 256 * 1024 * rounds / max(time.process_time() - start, 1e-9) / 1e9
    finally:
        torch.set_num_threads(threads)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="the machine's speed, probed repeatedly")
    p.add_argument("--probes", type=int, default=30)
    p.add_argument("--pause", type=float, default=0.5, help="seconds between probes")
    args = p.parse_args(argv)
    speeds = []
    for _ in range(args.probes):
        speeds.append(round(speed_probe(), 2))
        time.sleep(args.pause)
    print(
        json.dumps(
            {
                "bench": "speed_probe",
                "gflops": speeds,
                "min": min(speeds),
                "median": statistics.median(speeds),
                "max": max(speeds),
                "max_over_min": max(speeds) / min(speeds),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Wall-clock timing of named sections, reported as ``perf/time_<name>`` metrics."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional


class Timer:
    """Accumulates seconds per section until :meth:`pop`::

        with timer("generate"): ...
        with timer("generate"): ...       # adds to the same section
        tracker.log(timer.pop(), step)    # {"perf/time_generate": total seconds}

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called at both ends of a section so that
    asynchronous device work is counted where it is launched.
    """

    def __init__(self, prefix: str = "perf/time_", sync: Optional[Callable[[], None]] = None):
        self.prefix = prefix
        self.sync = sync
        self._totals: Dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.sync is not None:
            self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            self._totals[name] += time.perf_counter() - start

    def seconds(self, name: str) -> float:
        """Seconds accumulated in ``name`` since the last :meth:`pop`."""
        return self._totals.get(name, 0.0)

    def pop(self) -> Dict[str, float]:
        """``{prefix + name: seconds}`` for every section since the last pop; then reset."""
        out = {f"{self.prefix}{name}": seconds for name, seconds in self._totals.items()}
        self._totals.clear()
        return out


def tokens_per_second(num_tokens: float, seconds: float) -> float:
    """Throughput; 0.0 when no time has elapsed (nothing measured yet)."""
    return float(num_tokens) / seconds if seconds > 0 else 0.0

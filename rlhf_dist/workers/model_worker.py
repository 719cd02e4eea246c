"""What every role actor holding a model shares: its engine, idle offload around each call
(:func:`uses_engine`), checkpoints, export and the frozen-weights checksum."""

from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from rlhf_dist.config import Config
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.protocol import Batch
from rlhf_dist.workers.base import DistributedWorker

Metrics = Dict[str, float]


def seeded_build(seed: int, build: Callable[[], torch.nn.Module]):
    def run():
        torch.manual_seed(seed)  # tiny models: identical init on every rank and every role
        return build()

    return run


def uses_engine(method):
    """A role method that needs its engine on the device: with the role's
    ``resources.<role>.offload_when_idle`` the engine is reloaded before and offloaded after
    (:meth:`ModelWorker.engine_in_use`), so between calls it holds nothing on the device."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self.engine_in_use():
            return method(self, *map(_on_local_device, args), **kwargs)

    return call


def _on_local_device(arg):
    """Batches (and lists of them) arrive on CPU (``protocol``): move them where the engine
    is.  Results go back through pickling, which returns them to CPU."""
    from rlhf_dist.engine.dist import local_device

    if isinstance(arg, Batch):
        return arg.to(local_device())
    if isinstance(arg, list) and arg and all(isinstance(b, Batch) for b in arg):
        return [b.to(local_device()) for b in arg]
    return arg


class ModelWorker(DistributedWorker):
    """Shared by the roles: the engine, idle offload, checkpointing, and export."""

    role: str  # the key of the role's section in ``resources``

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self._depth = 0  # nesting of engine_in_use (generate calls logprobs)
        self._offload_s = 0.0  # seconds spent offloading/reloading since offload_stats()
        self.engine: Optional[ModelEngine] = None  # set by the role's build()

    @contextlib.contextmanager
    def engine_in_use(self):
        """The outermost use reloads the engines (once built) and offloads them after."""
        idle_offload = self._depth == 0 and getattr(self.cfg.resources, self.role).offload_when_idle
        if idle_offload:
            self._move_engines(ModelEngine.reload)
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if idle_offload:  # nothing to move after a failed build()
                self._move_engines(ModelEngine.offload)

    def _engines(self) -> List[ModelEngine]:
        """The engines this rank holds (none before build())."""
        return [self.engine] if self.engine is not None else []

    def _move_engines(self, move: Callable[[ModelEngine], None]) -> None:
        """``move`` (offload or reload) each engine, the seconds counted for offload_stats."""
        started = time.perf_counter()
        for engine in self._engines():
            move(engine)
        self._offload_s += time.perf_counter() - started

    def offload_stats(self) -> Metrics:
        """``perf/<role>_offload_s``: seconds this rank spent offloading and reloading since
        the last call; ``perf/<role>_offloaded``: 1 if all its engines are in CPU memory now."""
        seconds, self._offload_s = self._offload_s, 0.0
        return {
            f"perf/{self.role}_offload_s": seconds,
            f"perf/{self.role}_offloaded": float(all(e.offloaded for e in self._engines())),
        }

    @uses_engine
    def save(self, directory: str) -> None:
        self.engine.save(Path(directory))

    @uses_engine
    def load(self, directory: str) -> None:
        self.engine.load(Path(directory))

    @uses_engine
    def export_hf(self, directory: str) -> None:
        self.engine.export_hf(
            Path(directory),
            self.tokenizer(),
            is_main=self.rank == 0,
            merge_lora=self.cfg.checkpoint.merge_lora,
        )

    def size_metrics(self) -> Metrics:
        """``ModelEngine.size_metrics`` of this rank, the role in each name."""
        return {
            key.replace("/", f"/{self.role}_", 1): value
            for key, value in self.engine.size_metrics().items()
        }

    @uses_engine
    def state_checksum(self) -> float:
        """Collective under ZeRO-3: ``ModelEngine.state_checksum`` (CRC32 of the full state
        dict).  Frozen models must keep it bit for bit."""
        return self.engine.state_checksum()

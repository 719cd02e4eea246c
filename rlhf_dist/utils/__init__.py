"""Run utilities: tracking (W&B + console + metrics.jsonl + progress), checkpoint directories,
seeding / RNG state, timing.

Importing this package is cheap: names are loaded on first use (``seeding`` pulls in torch,
``Tracker`` imports wandb only when it starts a W&B run).  No ray / deepspeed /
torch.distributed here: callers pass ``is_main`` / ``rank`` and do their own barriers.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Tracker": "tracking", "read_metrics": "tracking", "progress": "tracking",
    "resolve_wandb_mode": "tracking", "wandb_key_configured": "tracking",
    "CheckpointDir": "checkpoint", "is_complete": "checkpoint",
    "seed_everything": "seeding", "rng_state": "seeding", "set_rng_state": "seeding",
    "save_rng_state": "seeding", "load_rng_state": "seeding",
    "Timer": "timing", "tokens_per_second": "timing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)

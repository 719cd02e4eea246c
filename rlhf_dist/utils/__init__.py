"""Run utilities: tracking (W&B + console + metrics.jsonl + progress), checkpoint directories,
seeding / RNG state, timing, ``module:function`` specs.

Importing this package is cheap: names are loaded on first use (``seeding`` pulls in torch,
``Tracker`` imports wandb only when it starts a W&B run).  No ray / deepspeed /
torch.distributed here: callers pass ``is_main`` / ``rank`` and do their own barriers.
"""

from __future__ import annotations

from rlhf_dist._lazy import lazy_exports

_EXPORTS = {
    "Tracker": "tracking",
    "read_metrics": "tracking",
    "progress": "tracking",
    "resolve_wandb_mode": "tracking",
    "wandb_key_configured": "tracking",
    "CheckpointDir": "checkpoint",
    "is_complete": "checkpoint",
    "seed_everything": "seeding",
    "rng_state": "seeding",
    "set_rng_state": "seeding",
    "save_rng_state": "seeding",
    "load_rng_state": "seeding",
    "Timer": "timing",
    "tokens_per_second": "timing",
    "mean_rows": "averages",
    "load_callable": "imports",
    "state_checksum": "checksum",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

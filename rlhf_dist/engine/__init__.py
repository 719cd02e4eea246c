"""DeepSpeed engines and torch.distributed set-up (one of the two packages that import them).

Exports resolve lazily (PEP 562): ``import rlhf_dist.engine`` imports neither deepspeed nor
torch; the first use of a name imports its submodule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List

from rlhf_dist._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs: the names of _EXPORTS
    from rlhf_dist.engine.ds_config import build_ds_config, build_frozen_ds_config
    from rlhf_dist.engine.engine import ModelEngine
    from rlhf_dist.engine.schedule import lr_multiplier

# public name -> submodule that defines it
_EXPORTS: Dict[str, str] = {
    "build_ds_config": "ds_config",
    "build_frozen_ds_config": "ds_config",
    "lr_multiplier": "schedule",
    "ModelEngine": "engine",
}

__all__: List[str] = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

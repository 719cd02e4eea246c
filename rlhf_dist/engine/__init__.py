"""DeepSpeed engines and torch.distributed set-up (one of the two packages that import them)."""
from rlhf_dist.engine.ds_config import build_ds_config, build_frozen_ds_config
from rlhf_dist.engine.schedule import lr_multiplier

__all__ = ["build_ds_config", "build_frozen_ds_config", "lr_multiplier", "ModelEngine"]


def __getattr__(name):  # keep `import rlhf_dist.engine` cheap: deepspeed loads on first use
    if name == "ModelEngine":
        from rlhf_dist.engine.engine import ModelEngine

        return ModelEngine
    raise AttributeError(name)

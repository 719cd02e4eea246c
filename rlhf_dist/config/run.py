"""The run's outputs: where its metrics go (logging) and its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from rlhf_dist.config.checks import _choice, _positive, _require

LOGGING_BACKENDS = ("wandb", "tensorboard", "mlflow")  # utils.tracking: a sink for each


@dataclass
class LoggingConfig:
    """Console + ``metrics.jsonl`` always; W&B, TensorBoard, MLflow as ``backend`` lists them.

    ``mode: auto`` is online when a W&B key is configured, offline otherwise.
    """

    # wandb | tensorboard | mlflow, or a list of them ([wandb, tensorboard]); none = only
    # metrics.jsonl and the console, which are always written
    backend: Any = "wandb"
    # auto | online | offline (WANDB_MODE wins): auto is online when a W&B key is configured
    mode: str = "auto"
    project: str = "rlhf_dist"  # W&B project
    name: Optional[str] = None  # W&B run name; null = W&B picks one
    group: Optional[str] = None  # W&B group (e.g. one per sweep)
    tags: List[str] = field(default_factory=list)  # W&B tags
    progress_bar: bool = True  # a progress bar on rank 0's console

    def __post_init__(self):
        names = self._names()
        _require(
            all(isinstance(n, str) for n in names),
            "logging.backend",
            f"expected a name or a list of names, got {self.backend!r}",
        )
        _require(
            len(names) == len(set(names)), "logging.backend", f"names a backend twice: {names}"
        )
        _require(
            names == ["none"] or "none" not in names,
            "logging.backend",
            f"none cannot be combined with other backends: {names}",
        )
        for name in names:
            _choice("logging.backend", name, [*LOGGING_BACKENDS, "none"])
        _choice("logging.mode", self.mode, ["auto", "online", "offline"])

    def _names(self) -> List[Any]:
        return [self.backend] if isinstance(self.backend, str) else list(self.backend or [])

    @property
    def backends(self) -> List[str]:
        """The backends' names in order ([] for none)."""
        return [n for n in self._names() if n != "none"]


@dataclass
class CheckpointConfig:
    """``save_every`` steps (0: only at the end), keep the last ``keep_last``."""

    save_every: int = 0  # save a checkpoint every N steps (PPO: iterations); 0 = at the end only
    keep_last: int = 2  # checkpoints kept on disk (older ones are deleted)
    # none | auto (the latest checkpoint of output_dir) | a checkpoint directory
    resume: str = "none"
    export_hf: bool = True  # write the trained model in HF format to <output_dir>/model at the end
    # a LoRA model's export: the adapter (peft) in <model>/adapter and, when true, the merged
    # model (plain transformers) in <model>
    merge_lora: bool = True

    def __post_init__(self):
        _positive("checkpoint.save_every", self.save_every, allow_zero=True)
        _positive("checkpoint.keep_last", self.keep_last)

"""Seeding, the seeds derived from a run's ``seed``, and exact save/restore of every random
generator a run draws from.

Every seed a run derives comes from :func:`derive_seed` with one of the named streams below,
so two streams never share seeds for small indices and changing one leaves the others alone.
The constants are fixed: they set every run's numbers.

``rng_state()`` holds only Python ints/tuples/lists and torch tensors, so it round-trips through
``torch.save`` / ``torch.load(weights_only=True)``.  Each rank saves its own state (draws differ
per rank): ``save_rng_state(dir, rank)`` / ``load_rng_state(dir, rank)``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch


# The streams derived from the run's seed (``derive_seed(seed, index, stream)``):
DATA_ORDER = 100_003  # a dataset's order in each epoch (index: the epoch)
MINIBATCH_ORDER = 1_000_003  # the PPO experience's minibatch order (index: the PPO epoch)
SAMPLING = 1_000_003  # sampling of the prompt batches (index: the batch; PPO, eval, label)


def derive_seed(seed: int, index: int, stream: int) -> int:
    """The seed of draw ``index`` of ``stream`` (a constant above) in a run seeded ``seed``."""
    return seed * stream + index


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, NumPy's global generator, torch CPU and (if present) CUDA."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses started after this


def _numpy_state() -> Dict[str, Any]:
    state = np.random.get_state(legacy=False)
    inner = state["state"]
    return {
        "bit_generator": state["bit_generator"],
        "has_gauss": int(state["has_gauss"]),
        "gauss": float(state["gauss"]),
        "state": {"key": [int(k) for k in inner["key"]], "pos": int(inner["pos"])},
    }


def _set_numpy_state(state: Dict[str, Any]) -> None:
    inner = state["state"]
    np.random.set_state(
        {**state, "state": {"key": np.asarray(inner["key"], dtype=np.uint32), "pos": inner["pos"]}}
    )


def rng_state() -> Dict[str, Any]:
    """The current state of the Python, NumPy, torch CPU and CUDA generators."""
    state: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore a state from :func:`rng_state`; the next draws repeat those made after it."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_state_file(directory: str | os.PathLike, rank: int) -> Path:
    return Path(directory) / f"rng_state_rank{rank}.pt"


def save_rng_state(directory: str | os.PathLike, rank: int) -> Path:
    """Write this rank's generator states into a checkpoint (staging) directory."""
    path = rng_state_file(directory, rank)
    torch.save(rng_state(), path)
    return path


def load_rng_state(directory: str | os.PathLike, rank: int) -> None:
    """Restore this rank's generator states from a checkpoint directory."""
    set_rng_state(torch.load(rng_state_file(directory, rank), weights_only=True))

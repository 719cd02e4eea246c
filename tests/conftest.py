"""Test-wide environment: nothing touches the network, W&B runs offline; the toy tokenizer
trained into a temporary cache (``toy_tok``); DeepSpeed's JIT-built CPU ops cached per Python
environment (``torch_extensions_dir``)."""

import hashlib
import os
import sys
import time
import warnings
from pathlib import Path

import pytest

pytest_plugins = ["ceiling"]  # tests/ceiling.py: the per-test time ceilings

for key, value in {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(key, value)

STALE_LOCK_S = 600  # DeepSpeed's shm op builds in ~30 s; a lock this old is a killed build's


def torch_extensions_dir() -> Path:
    """DeepSpeed's CPU ops (built on first use) cached per Python environment: two
    virtualenvs sharing torch's default cache rebuild the op in turn, and one's build under
    way breaks the other's load.  A build lock left by a killed process makes every later
    load wait forever (torch's ``FileBaton``): one older than ``STALE_LOCK_S`` is removed."""
    tag = hashlib.sha1(sys.prefix.encode()).hexdigest()[:10]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = root / "torch_extensions" / f"rlhf_dist_tests_{tag}"
    for lock in path.glob("*/lock"):
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            warnings.warn(f"removing the stale build lock {lock}")
            lock.unlink(missing_ok=True)
    return path


os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(torch_extensions_dir()))


def pytest_sessionfinish(session, exitstatus):
    from jobs import stop_shared_ray  # the Ray instance the session's jobs shared

    stop_shared_ray()


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("rlhf_dist_cache")


@pytest.fixture(scope="session")
def toy_tok(toy_cache):
    from rlhf_dist.toy import toy_tokenizer

    return toy_tokenizer(cache_dir=str(toy_cache))

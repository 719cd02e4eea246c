"""The engine tests hold real one-rank DeepSpeed engines in the test process."""

from __future__ import annotations

import gc
import os

import pytest

from rlhf_dist.engine import dist


@pytest.fixture(scope="module", autouse=True)
def one_rank_group():
    """torch.distributed (gloo) as rank 0 of 1 for a module; environment restored after."""
    saved = dict(os.environ)
    os.environ.update(
        {
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(dist.free_port()),
        }
    )
    dist.init_distributed()
    yield
    dist.shutdown()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def collect_engines():
    """A ZeRO-3 engine still alive keeps transformers' ``HfDeepSpeedConfig`` set, and the next
    test's model would be built partitioned: collect each test's engines (they hold cycles)."""
    yield
    gc.collect()

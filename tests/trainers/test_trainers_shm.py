"""A finished 2-rank CPU job leaves nothing in /dev/shm.  DeepSpeed's CPU all-reduce gives each
rank a ~66 MB shared-memory file and never removes it (measured here: 324 of them, 21 GB, had
piled up after a day of test runs and Ray's object store, which lives there too, ran out);
``engine.dist.release_shm_names`` unlinks them once every rank has mapped its peers'."""
from __future__ import annotations

from pathlib import Path

import pytest

from trainer_helpers import free_port, launch

pytestmark = pytest.mark.slow


def test_two_rank_job_leaves_no_shared_memory_files(tmp_path):
    port = free_port()
    launch("sft", tmp_path / "out", "train.max_steps=2", "train.eval_every=0",
           "logging.backend=none", "checkpoint.export_hf=false", "deepspeed.zero_stage=2",
           port=port).check()
    assert sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*")) == []

"""A finished 2-rank CPU job leaves nothing in /dev/shm.  DeepSpeed's CPU all-reduce gives each
rank a ~66 MB shared-memory file and never removes it (measured here: 324 of them, 21 GB, had
piled up after a day of test runs and Ray's object store, which lives there too, ran out);
``engine.dist.release_shm_names`` unlinks them once every rank has mapped its peers'."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_two_rank_job_leaves_no_shared_memory_files(launcher_run):
    """The session's 2-rank ZeRO-2 SFT run (no run of its own: CI time), by its master port."""
    run = launcher_run("sft", 2)
    assert run.port is not None
    assert sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{run.port}_*")) == []

"""Shared, lazily started 2-rank launcher runs (one per job × ZeRO stage, reused by every test
that needs it: loss curves, exports, W&B, the 2-node comparison).  The ZeRO-2 runs train in
bf16 (``deepspeed.bf16=true model.dtype=bfloat16``, what every cluster config sets); the
ZeRO-3 ones in float32, whose exports the tests compare with the run's own eval to 1e-5."""

from __future__ import annotations

import pytest

from trainer_helpers import BF16, JOB_OVERRIDES, WANDB_RUN, Run, launch


@pytest.fixture(scope="session")
def launcher_run(tmp_path_factory):
    """``launcher_run(job, stage)``: the finished 2-rank deepspeed-launcher run (started on
    first use, then cached for the session)."""
    root = tmp_path_factory.mktemp("launcher")
    done = {}

    def get(job: str, stage: int) -> Run:
        if (job, stage) not in done:
            backend = "wandb" if (job, stage) == WANDB_RUN else "none"
            done[job, stage] = launch(
                job,
                root / f"{job}-zero{stage}",
                f"deepspeed.zero_stage={stage}",
                f"logging.backend={backend}",
                *JOB_OVERRIDES[job],
                *(BF16 if stage == 2 else ()),
            ).check()
        return done[job, stage]

    return get

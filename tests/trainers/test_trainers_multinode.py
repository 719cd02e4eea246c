"""Two "nodes" on one machine: two deepspeed launcher invocations, ``--node_rank 0`` and ``1``,
one slot each, same master address and port, ``--no_ssh`` (each launcher starts only its own
node's ranks, as on a cluster without passwordless ssh).

The hostfile names two hosts; with ``--no_ssh`` their names are only keys (nothing resolves or
connects to them; two ``localhost`` lines would be rejected as a duplicate host).  The job is
the 2-rank ZeRO-2 SFT run of ``launcher_run``, so the two topologies must log the same losses.
"""

from __future__ import annotations

import sys
import time

import pytest

from trainer_helpers import (
    BF16,
    CONFIGS,
    JOB_OVERRIDES,
    QUIET,
    finish,
    free_port,
    job_env,
    series,
    start,
    trainer_state,
)

pytestmark = pytest.mark.slow


def test_two_nodes_without_ssh_train_like_one_node_with_two_ranks(tmp_path, launcher_run):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=1\nnode-b slots=1\n")
    out, port = tmp_path / "out", free_port()
    job = [
        "sft",
        "-c",
        CONFIGS / "sft.yaml",
        f"output_dir={out}",
        *QUIET,
        "deepspeed.zero_stage=2",
        "logging.backend=none",
        *JOB_OVERRIDES["sft"],
        *BF16,
    ]
    started = time.monotonic()
    procs = [
        start(
            [
                sys.executable,
                "-m",
                "deepspeed.launcher.runner",
                "--hostfile",
                hostfile,
                "--no_ssh",
                "--node_rank",
                node,
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                port,
                "--module",
                "rlhf_dist.cli",
                *job,
            ],
            tmp_path / f"node{node}",
            job_env(),
        )
        for node in (0, 1)
    ]
    runs = [finish(proc, out, started, timeout=300) for proc in procs]
    for node, run in enumerate(runs):
        assert run.returncode == 0, f"node {node}:\n{run.log[-4000:]}"
        assert f"nnodes=2, num_local_procs=1, node_rank={node}" in run.log
    assert "'node-a': [0], 'node-b': [1]" in runs[1].log  # global rank 1 lives on node 1

    state = trainer_state(out)
    assert (state["world_size"], state["global_step"]) == (2, 14)
    losses = series(runs[0].metrics, "train/loss")
    assert sum(losses[s] for s in (12, 13, 14)) / 3 < losses[1] - 1.0
    # same data split, same reductions: the 1-node 2-rank run's losses
    reference = series(launcher_run("sft", 2).metrics, "train/loss")
    assert losses.keys() == reference.keys()
    for step, loss in losses.items():
        assert loss == pytest.approx(reference[step], abs=1e-5), step

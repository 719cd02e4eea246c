"""The launch scripts run for real on this CPU machine: ``launch/local.sh`` with 2 processes,
``launch/multinode.sh`` as two "nodes" (``NODE_RANK=0/1``, no ssh) on one machine — the same
losses as the one-node run — and ``launch/ray_cluster.sh start`` + ``launch/ray_submit.sh``
against a private one-host Ray cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List

import pytest

from launch_helpers import LAUNCH, QUICK, REPO, free_port, script_env, sh, train_losses, write

# --------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "run"
    proc = sh(
        "local.sh",
        "2",
        "sft",
        "configs/tiny/sft.yaml",
        f"output_dir={out}",
        *QUICK,
        timeout=900,
        MASTER_PORT=str(free_port()),
    )
    return out, proc


@pytest.mark.slow
def test_local_two_processes_train(local_run):
    out, proc = local_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "dist_world_size=2" in proc.stdout + proc.stderr
    losses = train_losses(out)
    assert sorted(losses) == [1, 2, 3, 4]
    assert losses[4] < losses[1] - 0.1, losses


@pytest.mark.slow
def test_multinode_two_nodes_on_one_machine(local_run, tmp_path):
    """Two launcher invocations (NODE_RANK=0/1, --no_ssh), one slot each, one master: the same
    losses as the 2-process one-node run."""
    hostfile = write(tmp_path / "hostfile", "localhost slots=1\n127.0.0.1 slots=1\n")
    out = tmp_path / "run"
    port = str(free_port())
    args = [
        "bash",
        str(LAUNCH / "multinode.sh"),
        str(hostfile),
        "sft",
        "configs/tiny/sft.yaml",
        f"output_dir={out}",
        *QUICK,
    ]
    procs = [
        subprocess.Popen(
            args,
            cwd=REPO,
            env=script_env(NODE_RANK=str(rank), MASTER_PORT=port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        logs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "nnodes=2" in logs[0] and "node_rank=1" in logs[1]
    expected = train_losses(local_run[0])
    assert train_losses(out) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def _pids_mentioning(text: str) -> List[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
                )
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


def _stop_private_ray(temp_dir: str) -> None:
    """Stop the Ray processes this test started — found by their private temp dir, by PID
    (``ray stop`` would stop every Ray process on the machine).  Raylet first, GCS last."""

    def kill(pids, sig):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def cmd(pid):
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore")
        except OSError:
            return ""

    for stage in ("raylet", None, "gcs_server"):
        pids = [
            p
            for p in _pids_mentioning(temp_dir)
            if stage is None and "gcs_server" not in cmd(p) or stage and stage in cmd(p)
        ]
        kill(pids, signal.SIGTERM)
        deadline = time.time() + 10
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)
        kill([p for p in pids if Path(f"/proc/{p}").exists()], signal.SIGKILL)


@pytest.mark.slow
def test_ray_cluster_start_and_submit_on_one_host(tmp_path):
    """``ray_cluster.sh start`` with ``localhost slots=1`` brings up a head this test owns
    (private RAY_TMPDIR and ports, so no other Ray on the machine is touched or joined), and
    ``ray_submit.sh`` runs an rlhf-dist command on it through ``ray job submit``."""
    temp_dir = tempfile.mkdtemp(prefix="rlk", dir="/tmp")  # short: Ray's unix sockets live here
    hostfile = write(tmp_path / "hostfile", "localhost slots=1\n")
    gcs, dash, client, agent = (free_port() for _ in range(4))
    env = dict(
        RAY_TMPDIR=temp_dir,
        RAY_PORT=str(gcs),
        RAY_DASHBOARD_PORT=str(dash),
        RAY_START_ARGS=f"--ray-client-server-port {client} "
        f"--dashboard-agent-listen-port {agent} --disable-usage-stats",
    )
    try:
        start = sh("ray_cluster.sh", "start", str(hostfile), timeout=180, **env)
        assert start.returncode == 0, start.stdout[-3000:] + start.stderr[-3000:]
        assert "export RAY_ADDRESS=" in start.stdout and f":{gcs}" in start.stdout
        deadline = time.time() + 120  # the autoscaler reports a few seconds after start
        while True:
            status = sh("ray_cluster.sh", "status", str(hostfile), timeout=120, **env)
            assert status.returncode == 0, status.stderr[-3000:]
            if "1.0 GPU" in status.stdout or time.time() > deadline:
                break
            time.sleep(2)
        assert "1.0 GPU" in status.stdout, status.stdout  # slots=1 -> --num-gpus 1
        job = sh(
            "ray_submit.sh",
            f"127.0.0.1:{dash}",
            "sft",
            "configs/tiny/sft.yaml",
            "seed=7",
            "--print-config",
            timeout=300,
            **env,
        )
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "seed: 7" in job.stdout and "succeeded" in job.stdout + job.stderr
    finally:
        _stop_private_ray(temp_dir)
        assert _pids_mentioning(temp_dir) == []
        subprocess.run(["rm", "-rf", temp_dir], check=False)

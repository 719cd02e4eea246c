"""The scripts in launch/: every one passes ``bash -n``, prints its usage with ``-h``, and
(``DRY_RUN=1``) builds the command its header documents.  ``ray_cluster.sh stop`` is only
checked here, in dry-run mode: ``ray stop`` stops every Ray process on the host, other
people's included."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launch_helpers import LAUNCH, REPO, SCRIPTS, dry, sh, write

# --------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("script", SCRIPTS + ["lib.sh"])
def test_script_syntax(script):
    proc = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_usage(script):
    text = (LAUNCH / script).read_text()
    assert "set -euo pipefail" in text
    assert not re.search(r"\b(?!127\.0\.0\.1|0\.0\.0\.0)\d+\.\d+\.\d+\.\d+\b", text), (
        "no hard-coded addresses"
    )
    proc = sh(script, "-h")
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and proc.stdout.splitlines()[0].startswith(f"launch/{script}")
    none = sh(script)
    assert none.returncode == 2 and "usage:" in none.stderr


def test_local_dry_run():
    [cmd] = dry(
        "local.sh",
        "8",
        "sft",
        "configs/tiny/sft.yaml",
        "output_dir=/x y",
        "a.b=1",
        MASTER_PORT="29555",
    )
    assert cmd == (
        "deepspeed --num_gpus 8 --master_port 29555 --module rlhf_dist.cli sft "
        r"-c configs/tiny/sft.yaml output_dir=/x\ y a.b=1"
    )
    bad = sh("local.sh", "two", "sft", "configs/tiny/sft.yaml")
    assert bad.returncode == 2 and "positive integer" in bad.stderr
    missing = sh("local.sh", "2", "sft", "configs/nope.yaml")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_multinode_dry_run(tmp_path):
    hostfile = write(tmp_path / "hostfile", "node-a slots=8\nnode-b slots=8\n")
    [cmd] = dry("multinode.sh", str(hostfile), "dpo", "configs/tiny/dpo.yaml", "seed=1")
    assert cmd == (
        f"deepspeed --hostfile {hostfile} --master_addr node-a --master_port 29500 "
        "--module rlhf_dist.cli dpo -c configs/tiny/dpo.yaml seed=1"
    )
    [cmd] = dry(
        "multinode.sh",
        str(hostfile),
        "sft",
        "configs/tiny/sft.yaml",
        NODE_RANK="1",
        MASTER_ADDR="10.0.0.1",
        DS_ARGS="--ssh_port 2222",
    )
    assert "--master_addr 10.0.0.1 " in cmd and "--no_ssh --node_rank 1 --ssh_port 2222" in cmd
    out = sh("multinode.sh", str(hostfile), "sft", "configs/tiny/sft.yaml", NODE_RANK="2")
    assert out.returncode == 2 and "NODE_RANK=2" in out.stderr
    loop = write(tmp_path / "loop", "localhost slots=1\nnode-b slots=1\n")
    out = sh("multinode.sh", str(loop), "sft", "configs/tiny/sft.yaml", DRY_RUN="1")
    assert out.returncode == 2 and "loopback" in out.stderr


def test_ray_cluster_dry_run(tmp_path):
    hostfile = write(tmp_path / "hostfile", "head-node slots=8\nworker-1 slots=4\n")
    env = dict(RAY_PORT="6400", HOME=str(tmp_path))  # no auth token in this HOME
    start = dry("ray_cluster.sh", "start", str(hostfile), **env)
    assert len(start) == 2
    assert start[0].startswith("ssh -o BatchMode=yes head-node ")
    assert r"ray\ start\ --head\ --port\ 6400\ --num-gpus\ 8\ --dashboard-host\ 0.0.0.0" in start[0]
    assert start[1].startswith("ssh -o BatchMode=yes worker-1 ")
    assert r"ray\ start\ --address\ head-node:6400\ --num-gpus\ 4" in start[1]
    stop = dry("ray_cluster.sh", "stop", str(hostfile), **env)
    assert [c.split()[3] for c in stop] == ["worker-1", "head-node"]  # workers first
    assert all(r"/ray\ stop" in c for c in stop)
    local = write(tmp_path / "local", "localhost slots=2\n")
    [cmd] = dry("ray_cluster.sh", "start", str(local), RAY_SLOTS_AS="cpus", **env)
    assert re.fullmatch(r"\S+/ray start --head --port 6400 --num-cpus 2 .*", cmd)  # no ssh
    [cmd] = dry("ray_cluster.sh", "stop", str(local), **env)
    assert re.fullmatch(r"\S+/ray stop", cmd)
    # with a token, remote hosts get a copy over ssh stdin and RAY_AUTH_MODE=token
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret")
    proc = sh("ray_cluster.sh", "start", str(hostfile), DRY_RUN="1", **env)
    assert "cat > ~/.ray/auth_token' <" in proc.stdout and "RAY_AUTH_MODE=token" in proc.stdout
    assert "secret" not in proc.stdout
    bad = sh("ray_cluster.sh", "restart", str(hostfile))
    assert bad.returncode == 2 and "unknown action" in bad.stderr


def test_ray_submit_dry_run():
    for address, url in [
        ("head", "http://head:8265"),
        ("head:9000", "http://head:9000"),
        ("https://ray.example.org", "https://ray.example.org"),
    ]:
        [cmd] = dry("ray_submit.sh", address, "ppo", "configs/tiny/sft.yaml", "seed=3")
        assert cmd == (
            f"ray job submit --address {url} --working-dir {REPO} "
            "-- rlhf-dist ppo -c configs/tiny/sft.yaml seed=3"
        )
    [cmd] = dry("ray_submit.sh", "h", "ppo", "configs/tiny/sft.yaml", RAY_SUBMIT_ARGS="--no-wait")
    assert "--working-dir " + str(REPO) + " --no-wait -- rlhf-dist" in cmd
    missing = sh("ray_submit.sh", "h", "ppo", "configs/nope.yaml")
    assert missing.returncode == 2 and "not found" in missing.stderr


@pytest.fixture
def fake_slurm(tmp_path):
    """A PATH directory whose ``scontrol show hostnames`` prints two nodes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = write(bin_dir / "scontrol", "#!/bin/sh\nprintf 'gpu-a\\ngpu-b\\n'\n")
    scontrol.chmod(0o755)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
        f"{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "gpu-[a-b]",
        "SLURM_NNODES": "2",
        "SLURM_GPUS_PER_NODE": "h100:8",
        "SLURM_CPUS_PER_TASK": "32",
        "SLURM_SUBMIT_DIR": str(REPO),
    }


def test_slurm_dry_run(fake_slurm):
    text = (LAUNCH / "slurm.sbatch").read_text()
    for directive in ("--nodes=", "--ntasks-per-node=1", "--gpus-per-node="):
        assert f"#SBATCH {directive}" in text
    [cmd] = dry("slurm.sbatch", "sft", "configs/tiny/sft.yaml", "seed=2", **fake_slurm)
    assert cmd.startswith("srun --nodes 2 --ntasks-per-node 1 --cpus-per-task 32 bash -c ")
    assert cmd.endswith("rlhf-torchrun sft -c configs/tiny/sft.yaml seed=2")
    inner = cmd.replace("\\", "")
    for piece in (
        '--nnodes "$SLURM_NNODES"',
        '--node_rank "$SLURM_NODEID"',
        '--nproc_per_node "$GPUS"',
        '--master_addr "$MASTER_ADDR"',
        "-m rlhf_dist.cli",
    ):
        assert piece in inner
    ray = dry("slurm.sbatch", "ppo", "configs/tiny/sft.yaml", RLHF_SLURM_MODE="ray", **fake_slurm)
    assert ray[0] == (
        "srun --nodes 1 --ntasks 1 --cpus-per-task 32 -w gpu-a ray start --head "
        "--block --port 6379 --num-gpus 8 --dashboard-host 0.0.0.0 "
        "--dashboard-port 8265"
    )
    assert (
        "--cpus-per-task 32 --exclude gpu-a ray start --block --address gpu-a:6379 --num-gpus 8"
    ) in ray[1]
    assert ray[2] == (
        "ray job submit --address http://gpu-a:8265 --working-dir . -- rlhf-dist "
        "ppo -c configs/tiny/sft.yaml"
    )
    no_cpus = {**fake_slurm, "SLURM_CPUS_PER_TASK": ""}  # not asked for: srun's own default
    [cmd] = dry("slurm.sbatch", "sft", "configs/tiny/sft.yaml", **no_cpus)
    assert cmd.startswith("srun --nodes 2 --ntasks-per-node 1 bash -c ")
    outside = sh("slurm.sbatch", "sft", "configs/tiny/sft.yaml")
    assert outside.returncode == 2 and "sbatch" in outside.stderr

"""The launch kit: configs/, hostfile.example and the scripts in launch/.

Fast tests: every YAML under configs/ loads and resolves for the data-parallel size it is written
for (a ``# dp: N [M …]`` header line, or the table below for the tiny configs), PPO ones also
pass ``resolve_ppo_sizes`` and use the GPUs their ``# gpus: N`` header promises; the hostfile
example parses (ours and DeepSpeed's parser); every script passes ``bash -n``, prints its usage
with ``-h``, and (``DRY_RUN=1``) builds the command its header documents.

Slow tests run the scripts for real on this CPU machine: ``launch/local.sh`` with 2 processes,
``launch/multinode.sh`` as two "nodes" (``NODE_RANK=0/1``, no ssh) on one machine — the same
losses as the one-node run — and ``launch/ray_cluster.sh start`` + ``launch/ray_submit.sh``
against a private one-host Ray cluster.  ``ray_cluster.sh stop`` is only checked in dry-run
mode: ``ray stop`` stops every Ray process on the host, other people's included.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from rlhf_dist.config import load_config, resolve_ppo_sizes

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = ["local.sh", "multinode.sh", "ray_cluster.sh", "ray_submit.sh", "slurm.sbatch"]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
EXAMPLES = sorted((REPO / "configs" / "examples").glob("*.yaml"))
# Intended data-parallel sizes of configs without a "# dp:" header line.
DP_SIZES = {"tiny/sft.yaml": [1, 2], "tiny/rm.yaml": [1, 2], "tiny/dpo.yaml": [1, 2]}
QUICK = ["train.max_steps=4", "logging.backend=none", "checkpoint.export_hf=false"]


# --------------------------------------------------------------------------- helpers


def header_value(path: Path, key: str) -> Optional[List[int]]:
    """Integers of a ``# key: 1 2`` line in the leading comment block, or None."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        match = re.match(rf"#\s*{key}:\s*([\d\s]+)$", line)
        if match:
            return [int(x) for x in match.group(1).split()]
    return None


def is_ray_mode(path: Path, cfg) -> bool:
    return "ppo" in path.name or cfg.dpo.mode == "ray"


def intended_dp(path: Path) -> List[int]:
    dp = header_value(path, "dp")
    if dp is not None:
        return dp
    rel = path.relative_to(REPO / "configs").as_posix()
    if rel in DP_SIZES:
        return DP_SIZES[rel]
    cfg = load_config(str(path))
    # a tiny Ray-mode config added later: the trained model lives on the actor group
    return [cfg.resources.actor.world_size] if is_ray_mode(path, cfg) else [1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def script_env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "RAY_USAGE_STATS_ENABLED": "0"})
    for key in ("DRY_RUN", "NODE_RANK", "MASTER_ADDR", "DS_ARGS", "RAY_ADDRESS",
                "SLURM_JOB_NODELIST", "RAY_SUBMIT_ARGS", "RAY_START_ARGS"):
        env.pop(key, None)
    env.update(extra)
    return env


def sh(script: str, *args: str, timeout: float = 60, cwd: Path = REPO,
       **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LAUNCH / script), *args], cwd=cwd, env=script_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def dry(script: str, *args: str, **env: str) -> List[str]:
    """The commands a script would run (``DRY_RUN=1``), one string per command."""
    proc = sh(script, *args, DRY_RUN="1", **env)
    assert proc.returncode == 0, proc.stderr
    return [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def metrics(out: Path) -> List[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def train_losses(out: Path) -> Dict[int, float]:
    return {row["step"]: row["train/loss"] for row in metrics(out) if "train/loss" in row}


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_config_loads_and_resolves_for_its_dp_size(path):
    for dp in intended_dp(path):
        cfg = load_config(str(path)).resolve(dp)
        accum = cfg.train.gradient_accumulation_steps
        assert cfg.train.micro_batch_size * accum * dp == cfg.train.train_batch_size
        if is_ray_mode(path, cfg):
            assert cfg.resources.actor.world_size == dp, "dp header != actor ranks"
        if "ppo" in path.name:  # rollout sizes (a DPO config on Ray has no rollout)
            resolve_ppo_sizes(cfg)


def test_the_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"llama7b_sft_8gpu_zero3.yaml", "llama7b_rm_8gpu_zero3.yaml",
            "llama7b_dpo_8gpu_zero3.yaml", "qwen2.5_0.5b_dpo_1gpu.yaml",
            "llama7b_ppo_16gpu.yaml", "ppo_2node_colocated.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_header_says_command_and_hardware(path):
    lines = path.read_text().splitlines()
    head = []
    for line in lines:
        if not line.startswith("#"):
            break
        head.append(line)
    text = "\n".join(head)
    assert head, f"{path.name} must start with a comment"
    assert re.search(r"Hardware:", text), f"{path.name}: say on what hardware it runs"
    assert re.search(r"(launch/\S+\.sh|rlhf-dist) \S+ .*" + re.escape(path.name), text), \
        f"{path.name}: say which command runs it"
    assert header_value(path, "dp"), f"{path.name}: add a '# dp: N' line"


def test_7b_sft_example_is_the_documented_recipe():
    cfg = load_config(str(REPO / "configs/examples/llama7b_sft_8gpu_zero3.yaml")).resolve(8)
    assert (cfg.deepspeed.zero_stage, cfg.deepspeed.bf16, cfg.model.dtype) == (3, True, "bfloat16")
    assert (cfg.train.train_batch_size, cfg.train.micro_batch_size,
            cfg.train.gradient_accumulation_steps) == (128, 4, 4)
    assert cfg.data.max_length == 2048 and cfg.model.gradient_checkpointing
    dpo = load_config(str(REPO / "configs/examples/llama7b_dpo_8gpu_zero3.yaml"))
    assert dpo.dpo.ref_offload and dpo.deepspeed.zero_stage == 3


@pytest.mark.parametrize("path", [p for p in EXAMPLES if "ppo" in p.name], ids=lambda p: p.name)
def test_ppo_example_uses_the_gpus_it_promises(path):
    cfg = load_config(str(path))
    res = cfg.resources
    devices = res.actor.world_size
    if not res.colocate_actor_ref:
        devices += res.reference.world_size
    if cfg.ppo.needs_critic:
        devices += res.critic.world_size
    if cfg.ppo.use_reward_model and not (res.colocate_critic_reward and cfg.ppo.needs_critic):
        devices += res.reward.world_size
    assert header_value(path, "gpus") == [devices]
    if res.colocate_actor_ref:
        assert res.reference.world_size == res.actor.world_size
    if res.colocate_critic_reward:
        assert res.reward.world_size == res.critic.world_size


# --------------------------------------------------------------------------- hostfile


HOST_LINE = re.compile(r"^(\S+)\s+slots=(\d+)\s*$")


def test_hostfile_example_parses():
    text = (REPO / "hostfile.example").read_text()
    hosts = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = HOST_LINE.match(line)
            assert match, f"not 'host slots=N': {line!r}"
            hosts.append((match.group(1), int(match.group(2))))
    assert len(hosts) >= 2 and all(n > 0 for _, n in hosts)
    assert len({h for h, _ in hosts}) == len(hosts)
    assert text.lstrip().startswith("#"), "the example explains itself in comments"
    from deepspeed.launcher.runner import _parse_hostfile

    assert list(_parse_hostfile(text.splitlines(keepends=True)).items()) == hosts


def test_scripts_read_hostfiles_like_deepspeed(tmp_path):
    good = write(tmp_path / "good", "# c\n\nn1 slots=4  # a comment\n  n2 slots=2\n")
    cmd = 'source launch/lib.sh; read_hostfile "$1"; echo "${HOSTS[*]}|${SLOTS[*]}"'
    out = subprocess.run(["bash", "-c", cmd, "x", str(good)], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "n1 n2|4 2"
    for bad, says in [("n1 slot=4\n", "expected 'host slots=N'"), ("n1 slots=1\nn1 slots=2\n",
                      "listed twice"), ("# only comments\n", "lists no host")]:
        proc = subprocess.run(["bash", "-c", cmd, "x", str(write(tmp_path / "bad", bad))],
                              cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 2 and says in proc.stderr, (bad, proc.stderr)


# --------------------------------------------------------------------------- scripts


@pytest.mark.parametrize("script", SCRIPTS + ["lib.sh"])
def test_script_syntax(script):
    proc = subprocess.run(["bash", "-n", str(LAUNCH / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_usage(script):
    text = (LAUNCH / script).read_text()
    assert "set -euo pipefail" in text
    assert not re.search(r"\b(?!127\.0\.0\.1|0\.0\.0\.0)\d+\.\d+\.\d+\.\d+\b", text), \
        "no hard-coded addresses"
    proc = sh(script, "-h")
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and proc.stdout.splitlines()[0].startswith(f"launch/{script}")
    none = sh(script)
    assert none.returncode == 2 and "usage:" in none.stderr


def test_local_dry_run():
    [cmd] = dry("local.sh", "8", "sft", "configs/tiny/sft.yaml", "output_dir=/x y", "a.b=1",
                MASTER_PORT="29555")
    assert cmd == ("deepspeed --num_gpus 8 --master_port 29555 --module rlhf_dist.cli sft "
                   r"-c configs/tiny/sft.yaml output_dir=/x\ y a.b=1")
    bad = sh("local.sh", "two", "sft", "configs/tiny/sft.yaml")
    assert bad.returncode == 2 and "positive integer" in bad.stderr
    missing = sh("local.sh", "2", "sft", "configs/nope.yaml")
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_multinode_dry_run(tmp_path):
    hostfile = write(tmp_path / "hostfile", "node-a slots=8\nnode-b slots=8\n")
    [cmd] = dry("multinode.sh", str(hostfile), "dpo", "configs/tiny/dpo.yaml", "seed=1")
    assert cmd == (f"deepspeed --hostfile {hostfile} --master_addr node-a --master_port 29500 "
                   "--module rlhf_dist.cli dpo -c configs/tiny/dpo.yaml seed=1")
    [cmd] = dry("multinode.sh", str(hostfile), "sft", "configs/tiny/sft.yaml", NODE_RANK="1",
                MASTER_ADDR="10.0.0.1", DS_ARGS="--ssh_port 2222")
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
    for address, url in [("head", "http://head:8265"), ("head:9000", "http://head:9000"),
                         ("https://ray.example.org", "https://ray.example.org")]:
        [cmd] = dry("ray_submit.sh", address, "ppo", "configs/tiny/sft.yaml", "seed=3")
        assert cmd == (f"ray job submit --address {url} --working-dir {REPO} "
                       "-- rlhf-dist ppo -c configs/tiny/sft.yaml seed=3")
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
    return {"PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                    f"{os.environ['PATH']}",
            "SLURM_JOB_NODELIST": "gpu-[a-b]", "SLURM_NNODES": "2",
            "SLURM_GPUS_PER_NODE": "h100:8", "SLURM_SUBMIT_DIR": str(REPO)}


def test_slurm_dry_run(fake_slurm):
    text = (LAUNCH / "slurm.sbatch").read_text()
    for directive in ("--nodes=", "--ntasks-per-node=1", "--gpus-per-node="):
        assert f"#SBATCH {directive}" in text
    [cmd] = dry("slurm.sbatch", "sft", "configs/tiny/sft.yaml", "seed=2", **fake_slurm)
    assert cmd.startswith("srun --nodes 2 --ntasks-per-node 1 bash -c ")
    assert cmd.endswith("rlhf-torchrun sft -c configs/tiny/sft.yaml seed=2")
    inner = cmd.replace("\\", "")
    for piece in ('--nnodes "$SLURM_NNODES"', '--node_rank "$SLURM_NODEID"',
                  '--nproc_per_node "$GPUS"', '--master_addr "$MASTER_ADDR"',
                  "-m rlhf_dist.cli"):
        assert piece in inner
    ray = dry("slurm.sbatch", "ppo", "configs/tiny/sft.yaml", RLHF_SLURM_MODE="ray", **fake_slurm)
    assert ray[0] == ("srun --nodes 1 --ntasks 1 -w gpu-a ray start --head --block --port 6379 "
                      "--num-gpus 8 --dashboard-host 0.0.0.0 --dashboard-port 8265")
    assert "--exclude gpu-a ray start --block --address gpu-a:6379 --num-gpus 8" in ray[1]
    assert ray[2] == ("ray job submit --address http://gpu-a:8265 --working-dir . -- rlhf-dist "
                      "ppo -c configs/tiny/sft.yaml")
    outside = sh("slurm.sbatch", "sft", "configs/tiny/sft.yaml")
    assert outside.returncode == 2 and "sbatch" in outside.stderr


# --------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "run"
    proc = sh("local.sh", "2", "sft", "configs/tiny/sft.yaml", f"output_dir={out}", *QUICK,
              timeout=900, MASTER_PORT=str(free_port()))
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
    args = ["bash", str(LAUNCH / "multinode.sh"), str(hostfile), "sft", "configs/tiny/sft.yaml",
            f"output_dir={out}", *QUICK]
    procs = [subprocess.Popen(args, cwd=REPO, env=script_env(NODE_RANK=str(rank),
                                                             MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
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
        pids = [p for p in _pids_mentioning(temp_dir)
                if stage is None and "gcs_server" not in cmd(p) or stage and stage in cmd(p)]
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
    env = dict(RAY_TMPDIR=temp_dir, RAY_PORT=str(gcs), RAY_DASHBOARD_PORT=str(dash),
               RAY_START_ARGS=f"--ray-client-server-port {client} "
                              f"--dashboard-agent-listen-port {agent} --disable-usage-stats")
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
        job = sh("ray_submit.sh", f"127.0.0.1:{dash}", "sft", "configs/tiny/sft.yaml",
                 "seed=7", "--print-config", timeout=300, **env)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "seed: 7" in job.stdout and "succeeded" in job.stdout + job.stderr
    finally:
        _stop_private_ray(temp_dir)
        assert _pids_mentioning(temp_dir) == []
        subprocess.run(["rm", "-rf", temp_dir], check=False)

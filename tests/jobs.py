"""Run real jobs in clean subprocesses and hold what they left: shared by the launcher-trainer
tests (tests/trainers/trainer_helpers.py) and the Ray tests (tests/ray/ray_helpers.py).

A job runs in its own process group (a timeout kills the ranks or Ray workers it spawned), with
no launcher or Ray-address variables leaking in from the test process, W&B offline, no hub, one
OpenMP thread per process (2 ranks on a 2-core machine).  Ray jobs join one Ray instance
started for the whole session (:func:`shared_ray_address`) unless they need one of their own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "tiny"
LEAKING_VARS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "CROSS_RANK",
    "CROSS_SIZE",
    "LOCAL_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "TORCHELASTIC_RUN_ID",
    "RAY_ADDRESS",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKING_VARS}
    env.update(
        {
            "WANDB_MODE": "offline",
            "WANDB_SILENT": "true",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    return env


def job_env(**extra: Optional[str]) -> Dict[str, str]:
    """A job's environment: this process's, cleaned (above), then ``extra`` (a ``None`` value
    unsets the variable).  ``RAY_ADDRESS`` is the session's shared Ray unless ``extra`` is
    given: the shared Ray's workers inherit its environment, not the job's (they get only the
    variables ``rlhf_dist.workers.cluster.FORWARDED_ENV_PREFIXES`` names), so a job with
    variables of its own starts a private Ray, whose workers inherit them."""
    env = _clean_env()
    if not extra:
        env.update(shared_ray_env())
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


# --------------------------------------------------------------------------- one Ray instance

# env= of a job that needs a Ray instance of its own: a test that finds the job's workers among
# its driver's child processes (to kill them) needs them there, not under the shared raylet.
PRIVATE_RAY = {"RAY_ADDRESS": None}
SHARED_RAY_CPUS = 16  # logical: more than any test job asks for
SHARED_RAY_AUTH = "disabled"  # set explicitly on the head and on every job that joins it
_shared_ray: list = []  # the session's head node (ray.cluster_utils.Cluster), once started


def shared_ray_env() -> Dict[str, str]:
    """The variables that join a job to the shared Ray: its address, and its authentication
    mode, which must be the head's (a Ray started in this process sets ``RAY_AUTH_MODE=token``
    here; a job that inherited it would refuse the shared head's unauthenticated calls, and
    the head would take the job for dead and destroy its actors as they are created)."""
    return {"RAY_ADDRESS": shared_ray_address(), "RAY_AUTH_MODE": SHARED_RAY_AUTH}


def shared_ray_address() -> str:
    """One Ray head node for every Ray job of the test session, started at its first use and
    stopped by :func:`stop_shared_ray` (``tests/conftest.py``, at the session's end).  Joining
    it saves each job starting and stopping a private instance (~4.5 s of a ~26 s tiny PPO
    job).  Its daemons and workers have the jobs' clean environment (one OpenMP thread), its
    own temporary directory, and the system config of a job's private instance."""
    if not _shared_ray:
        from ray.cluster_utils import Cluster

        from rlhf_dist.workers.cluster import LOCAL_SYSTEM_CONFIG

        saved = dict(os.environ)
        env = _clean_env()
        env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short socket paths
        env["RAY_AUTH_MODE"] = SHARED_RAY_AUTH
        os.environ.clear()
        os.environ.update(env)  # the head's processes, and so its workers, inherit this
        try:
            _shared_ray.append(
                Cluster(
                    initialize_head=True,
                    head_node_args={
                        "num_cpus": SHARED_RAY_CPUS,
                        "include_dashboard": False,
                        "gcs_server_port": free_port(),
                        "dashboard_agent_listen_port": free_port(),
                        "_system_config": dict(LOCAL_SYSTEM_CONFIG),
                    },
                )
            )
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return _shared_ray[0].address


def with_shared_ray() -> Dict[str, str]:
    """This process's environment as it is, joined to the shared Ray (for a command that runs
    Ray jobs with the environment a user's shell gives it: the demo, the benchmarks)."""
    return {**os.environ, **shared_ray_env()}


def stop_shared_ray() -> None:
    while _shared_ray:
        _shared_ray.pop().shutdown()


def read_metrics(out: Path) -> List[dict]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Run:
    """A finished job: exit code, console output, output directory, wall seconds."""

    returncode: int
    log: str
    out: Path
    seconds: float
    port: Optional[int] = None  # a launcher job's master port (its shm files are named by it)

    def check(self) -> "Run":
        assert self.returncode == 0, f"job failed ({self.returncode}):\n{self.log[-8000:]}"
        return self

    @property
    def metrics(self) -> List[dict]:
        return read_metrics(self.out)

    def series(self, key: str) -> List[float]:
        """``key`` of every row that has it, in logged order."""
        return [row[key] for row in self.metrics if key in row]

    def by_step(self, key: str) -> Dict[int, float]:
        return {row["step"]: row[key] for row in self.metrics if key in row}

    def last(self, key: str) -> float:
        return self.series(key)[-1]


def start(
    cmd: Sequence[str], out: Path, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None
) -> subprocess.Popen:
    """Start a job in its own process group (``cwd``: the output's parent by default);
    ``env``: variables set on top of :func:`job_env`'s (never instead of them: a job without
    PATH cannot compile DeepSpeed's CPU op)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        list(map(str, cmd)),
        cwd=cwd or out.parent,
        env=job_env(**(env or {})),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, out: Path, started: float, timeout: float) -> Run:
    """Wait for a job from :func:`start`; on timeout kill its process group and say so."""
    try:
        log, _ = proc.communicate(timeout=max(timeout - (time.monotonic() - started), 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        log += (
            f"\n[test] killed after {timeout:.0f}s (a stale torch_extensions lock hangs "
            f"DeepSpeed's JIT op load forever: look for FileBaton.wait)"
        )
    return Run(proc.returncode, log, out, time.monotonic() - started)


def run(
    cmd: Sequence[str],
    out: Path,
    timeout: float,
    env: Optional[Dict[str, str]] = None,
    cwd: Optional[Path] = None,
) -> Run:
    started = time.monotonic()
    return finish(start(cmd, out, env, cwd), out, started, timeout)

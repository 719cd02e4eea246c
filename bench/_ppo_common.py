"""Shared by the cases of ``bench/ppo.py``: the workload config, EOS-free generation, the
CPU meter over a process tree, and the per-iteration summary.

Every case runs in its own process (``bench/ppo.py --run-case NAME``), so "the process tree"
of a case is that process and all its descendants — for the Ray system the local Ray
instance it starts (gcs_server, raylet, dashboard and agents, idle workers) and the role
workers, which are children of the raylet.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence

import psutil
from _load import machine_busy_s


# --reward verifier: the built-in format verifier both sides call on the decoded answers
# (no label needed, no reward model): 1 when the answer says "sorry" anywhere
VERIFIER = ("regex_format", {"pattern": "sorry", "search": True})


def reward_overrides(args) -> List[str]:
    if getattr(args, "reward", "rm") == "rm":
        return []
    name, fn_args = VERIFIER
    inner = ", ".join(
        f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in fn_args.items()
    )
    return ["ppo.use_reward_model=false", f"ppo.rewards=[{{fn: {name}, args: {{{inner}}}}}]"]


def overrides(args, estimator: str, out_dir: str, backend: str = "hf") -> List[str]:
    """``key=value`` overrides of the benchmark workload (on top of the config defaults).

    Same model size for actor, reference, reward and critic; ZeRO-0 and one rank per role
    (the single-process loop holds one copy of each model, so does the Ray system).
    """
    tiny = (
        f"{{arch: llama, hidden_size: {args.hidden}, num_layers: {args.layers}, "
        f"num_heads: {args.heads}, intermediate_size: {args.intermediate}}}"
    )
    group = estimator != "gae"
    prompts = args.grpo_prompts if group else args.prompts
    samples = args.group_size if group else 1
    return [
        f"output_dir={out_dir}",
        f"seed={args.seed}",
        f"model.tiny={tiny}",
        f"reward_model.tiny={tiny}",
        f"critic_model.tiny={tiny}",
        "data.path=toy",
        f"data.toy.num_prompts={args.num_prompts}",
        f"data.max_length={args.max_prompt_length + args.max_new_tokens}",
        f"data.max_prompt_length={args.max_prompt_length}",
        f"train.lr={args.lr}",
        f"train.micro_batch_size={args.micro_batch}",
        "train.adam_betas=[0.9, 0.95]",
        "train.weight_decay=0.0",
        "train.max_grad_norm=1.0",
        "deepspeed.zero_stage=0",
        f"rollout.backend={backend}",
        f"rollout.rollout_batch_size={prompts}",
        f"rollout.n_samples_per_prompt={samples}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        f"rollout.min_new_tokens={args.max_new_tokens}",  # every rollout the same length
        "rollout.temperature=1.0",
        "rollout.top_p=1.0",
        "rollout.top_k=0",
        "rollout.do_sample=true",
        f"ppo.iterations={args.iterations}",
        f"ppo.ppo_epochs={args.ppo_epochs}",
        f"ppo.mini_batch_size={args.mini_batch}",
        f"ppo.critic_lr={args.lr}",
        f"ppo.kl_coef={args.kl_coef}",
        "ppo.kl_estimator=k1",
        "ppo.kl_controller=fixed",
        f"ppo.advantage_estimator={estimator}",
        "ppo.gamma=1.0",
        "ppo.lam=0.95",
        "ppo.clip_eps=0.2",
        "ppo.value_clip=0.2",
        "ppo.loss_agg=token_mean",
        "resources.placement_strategy=PACK",
        "resources.timeout_s=900",
        *[
            f"resources.{role}={{num_nodes: 1, devices_per_node: 1, cpus_per_worker: 1}}"
            for role in ("actor", "critic", "reward", "reference")
        ],
        "logging.backend=none",
        "logging.progress_bar=false",
        "checkpoint.save_every=0",
        "checkpoint.export_hf=false",
        *reward_overrides(args),
        *(
            ["rollout.logprobs_from_generate=true"]
            if getattr(args, "logprobs_from_generate", False)
            else []
        ),
    ]


# what a case changes on top of the workload: ray_grpo_lora's actor has LoRA on every linear
# layer (the workload's lr: speed only); ray_grpo_ref_in_actor's reference is a frozen engine
# in the actor's process instead of a group of its own
LORA = ["model.lora.r=16", "model.lora.alpha=32"]
CASE_OVERRIDES = {
    "ray_grpo_lora": LORA,
    "ray_grpo_ref_in_actor": ["resources.reference_in_actor=true"],
    "ray_grpo_async1_vllm": ["rollout.max_staleness=1"],
    "ray_grpo_async2_vllm": ["rollout.max_staleness=2"],
    "ray_async1_vllm": ["rollout.max_staleness=1"],
    "ray_async2_vllm": ["rollout.max_staleness=2"],
}


def load_bench_config(
    args, estimator: str, out_dir: str, backend: str = "hf", extra: Sequence[str] = ()
):
    from rlhf_dist.config import load_config

    return load_config(None, overrides(args, estimator, out_dir, backend) + list(extra))


def single_thread() -> None:
    import torch

    torch.set_num_threads(1)


# --------------------------------------------------------------------------- metering


class TreeMeter:
    """Wall clock and CPU seconds (user + system) of this process and all its descendants.

    ``phase(name)`` accumulates both into the current iteration; ``end_iteration(**extra)``
    closes it into :attr:`records`.  A descendant that appears during an interval counts
    from its start; one that ends during an interval loses its last partial interval (no
    process ends during the measured iterations here).  ``labels`` maps a pid to a group
    name (e.g. ``"workers"``); the rest of the tree is ``"driver"`` (this process) or
    ``"other"`` (e.g. Ray's own daemons), reported per iteration as ``cpu_by/<label>``.
    """

    def __init__(self) -> None:
        self.root = psutil.Process()
        self.labels: Dict[int, str] = {}
        self.records: List[Dict[str, float]] = []
        self._procs: Dict[int, psutil.Process] = {}
        self._current: Dict[str, float] = {}
        self._iter_start: Optional[tuple] = None

    def _refresh(self) -> None:
        procs = [self.root] + self.root.children(recursive=True)
        self._procs = {p.pid: p for p in procs}

    def cpu_by_pid(self) -> Dict[int, float]:
        out = {}
        for pid, proc in self._procs.items():
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            out[pid] = t.user + t.system
        return out

    def snapshot(self) -> tuple:
        return time.perf_counter(), self.cpu_by_pid()

    @staticmethod
    def cpu_delta(before: Dict[int, float], after: Dict[int, float]) -> Dict[int, float]:
        return {pid: cpu - before.get(pid, 0.0) for pid, cpu in after.items()}

    def label_of(self, pid: int) -> str:
        if pid == self.root.pid:
            return "driver"
        return self.labels.get(pid, "other")

    def begin_iteration(self) -> None:
        self._refresh()
        self._current = {}
        self._iter_start = self.snapshot()
        self._busy_start = machine_busy_s()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall0, cpu0 = self.snapshot()
        try:
            yield
        finally:
            wall1, cpu1 = self.snapshot()
            self._current[f"time_{name}_s"] = (
                self._current.get(f"time_{name}_s", 0.0) + wall1 - wall0
            )
            self._current[f"cpu_{name}_s"] = self._current.get(f"cpu_{name}_s", 0.0) + sum(
                self.cpu_delta(cpu0, cpu1).values()
            )

    def end_iteration(self, **extra: float) -> Dict[str, float]:
        wall0, cpu0 = self._iter_start
        wall1, cpu1 = self.snapshot()
        deltas = self.cpu_delta(cpu0, cpu1)
        record = {"time_s": wall1 - wall0, "cpu_s": sum(deltas.values()), **self._current}
        # CPU that processes outside the case's tree used meanwhile (other jobs on the machine)
        record["foreign_cpu_s"] = max(machine_busy_s() - self._busy_start - record["cpu_s"], 0.0)
        for pid, cpu in deltas.items():
            key = f"cpu_by/{self.label_of(pid)}"
            record[key] = record.get(key, 0.0) + cpu
        record["processes"] = float(len(self._procs))
        record.update(extra)
        self.records.append(record)
        return record


PHASES = ("sync", "generate", "score", "learn")  # sync: vLLM engines only (0 with HF)


def summarize(records: Sequence[Dict[str, float]], warmup: int) -> Dict[str, object]:
    """Per-iteration means over the iterations after ``warmup`` (sums of tokens / sums of
    seconds for the rates), plus the median iteration time.  Each record has ``time_s``,
    ``cpu_s``, ``rows``, ``tokens``, ``time_<phase>_s``, ``cpu_<phase>_s`` and
    ``cpu_by/<label>``."""
    kept = list(records[warmup:])
    if not kept:
        raise ValueError(f"{len(records)} iterations, warmup {warmup}: nothing to average")
    n = len(kept)
    total = lambda key: sum(r.get(key, 0.0) for r in kept)  # noqa: E731
    wall, cpu, rows, tokens = total("time_s"), total("cpu_s"), total("rows"), total("tokens")
    out: Dict[str, object] = {
        "iterations": len(records),
        "warmup": warmup,
        "measured": n,
        "rows_per_iter": rows / n,
        "tokens_per_iter": tokens / n,
        "s_per_iter": wall / n,
        "s_per_iter_median": statistics.median(r["time_s"] for r in kept),
        "cpu_s_per_iter": cpu / n,
        "samples_per_s": rows / wall,
        "tokens_per_s": tokens / wall,
        "samples_per_cpu_s": rows / cpu,
        "tokens_per_cpu_s": tokens / cpu,
        "cpu_per_wall": cpu / wall,
        # cores' worth of CPU used by other processes during the measured iterations
        "foreign_cores": total("foreign_cpu_s") / wall,
    }
    for phase in PHASES:
        out[f"time_{phase}_s"] = total(f"time_{phase}_s") / n
        out[f"cpu_{phase}_s"] = total(f"cpu_{phase}_s") / n
    out["time_other_s"] = out["s_per_iter"] - sum(out[f"time_{p}_s"] for p in PHASES)
    labels = sorted({k for r in kept for k in r if k.startswith("cpu_by/")})
    out["cpu_by"] = {k.split("/", 1)[1]: total(k) / n for k in labels}
    out["processes"] = max(r.get("processes", 1.0) for r in kept)
    return out


def rounded(value, digits: int = 4):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value

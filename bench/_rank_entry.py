"""One rank of a benchmark run: rlhf_dist's launcher trainer plus per-rank statistics.

    python bench/_rank_entry.py --stats-dir DIR {sft,dpo} -c CONFIG key=value ...
    deepspeed --num_gpus 2 --master_port P bench/_rank_entry.py --stats-dir DIR dpo -c ...

Runs the same trainer class as ``rlhf-dist sft|dpo`` (``SFTTrainer`` / ``DPOTrainer``), with
two additions made in a subclass, not in the trainer:

* after every step the wall-clock time and the process's CPU time are recorded
  (``step_end_s``, ``step_end_cpu_s``);
* at the end (``close``, before the process group goes) it writes ``DIR/rank<R>.json`` with
  the rank's peak RSS and the numbers of parameter and optimizer elements the rank holds,
  read from the DeepSpeed engine while it is alive.  The end-of-run eval, the checkpoint's
  files and the HF export are skipped (``--full-finish`` keeps them): they are not part of
  the measured steps and only lengthen a benchmark.

Counting (elements held by this rank, float32 = 4 bytes each):

* parameters: ``p.ds_tensor`` (the local shard) under ZeRO-3, ``p`` otherwise;
* optimizer: every tensor in the inner optimizer's ``state`` (Adam's ``exp_avg``,
  ``exp_avg_sq``, ``step``) plus the fp32 master partitions DeepSpeed keeps
  (``single_partition_of_fp32_groups`` in stage 1/2, ``fp32_partitioned_groups_flat`` in
  stage 3, ``fp32_groups_flat_partition`` of the bf16 optimizer) unless they share storage
  with the parameters.  With fp32 parameters DeepSpeed 0.19.8 still clones them: ZeRO-1/2
  always, ZeRO-3 because its "reuse the fp32 shard" test compares ``torch.device("cpu")``
  with the string ``"cpu"``, which is False.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List

MB = 2.0**20


def rss_peak_mb() -> float:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _storage_key(tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _bytes(tensors: Iterable, skip_storages=()) -> float:
    total, seen = 0, set()
    for t in tensors:
        if t is None or not hasattr(t, "numel") or t.numel() == 0:
            continue
        key = (_storage_key(t), t.storage_offset(), t.numel())
        if key in seen or _storage_key(t) in skip_storages:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


def local_params(module) -> List:
    """The parameter tensors this rank stores: ZeRO-3 shards or whole parameters."""
    return [getattr(p, "ds_tensor", p) for p in module.parameters()]


def optimizer_tensors(ds_engine) -> Dict[str, List]:
    """``{"state": [...], "master": [...]}`` of a DeepSpeed engine's optimizer (see module)."""
    opt = getattr(ds_engine, "optimizer", None)
    if opt is None:
        return {"state": [], "master": []}
    master = list(
        getattr(opt, "single_partition_of_fp32_groups", None)  # ZeRO-1/2
        or getattr(opt, "fp32_partitioned_groups_flat", None)  # ZeRO-3
        or getattr(opt, "fp32_groups_flat_partition", None)
        or []
    )  # bf16, ZeRO-0
    inner = getattr(opt, "optimizer", opt) if master else opt
    state = [
        v for per_param in inner.state.values() for v in per_param.values() if hasattr(v, "numel")
    ]
    return {"state": state, "master": master}


def engine_memory(model_engine) -> Dict[str, float]:
    """Per-rank parameter / optimizer memory of an rlhf_dist ``ModelEngine`` (MiB)."""
    params = local_params(model_engine.module)
    param_storages = {_storage_key(p) for p in params if p.numel()}
    tensors = optimizer_tensors(model_engine.ds)
    state_mb = _bytes(tensors["state"]) / MB
    master_mb = _bytes(tensors["master"], skip_storages=param_storages) / MB
    return {
        "param_mb": _bytes(params) / MB,
        "param_numel_local": sum(p.numel() for p in params),
        "param_numel_total": sum(
            getattr(p, "ds_numel", p.numel()) for p in model_engine.module.parameters()
        ),
        "optim_state_mb": state_mb,
        "optim_master_mb": master_mb,
        "optim_mb": state_mb + master_mb,
        "optimizer_state_numel_local": sum(t.numel() for t in tensors["state"]),
    }


class BenchMixin:
    """Mixed in before a ``LauncherTrainer`` subclass; see the module docstring."""

    stats_dir: Path
    full_finish = False

    def start(self) -> None:
        self.bench_rss_before_setup_mb = rss_peak_mb()
        super().start()

    def build(self) -> None:
        super().build()
        self.bench_rss_after_setup_mb = rss_peak_mb()
        self.bench_step_end_s: List[float] = []
        self.bench_step_end_cpu_s: List[float] = []
        self.bench_t0 = time.perf_counter()

    def train_step(self):
        metrics = super().train_step()
        self.bench_step_end_s.append(time.perf_counter() - self.bench_t0)
        self.bench_step_end_cpu_s.append(time.process_time())  # all threads of this process
        return metrics

    # without --full-finish, the end of the run is only the stats: no eval, no saved state
    def evaluate(self):
        return super().evaluate() if self.full_finish else None

    def save_to(self, staging):
        return super().save_to(staging) if self.full_finish else {}

    def close(self, failed: bool) -> None:
        if not failed:
            self.write_stats()
        super().close(failed)

    def write_stats(self) -> None:
        import torch

        stats = {
            "rank": self.rank,
            "world_size": self.world,
            "job": self.job,
            "zero_stage": self.engine.zero_stage,
            "threads": torch.get_num_threads(),
            "rss_before_setup_mb": self.bench_rss_before_setup_mb,
            "rss_after_setup_mb": self.bench_rss_after_setup_mb,
            "step_end_s": self.bench_step_end_s,
            "step_end_cpu_s": self.bench_step_end_cpu_s,
            **engine_memory(self.engine),
            "maxrss_mb": rss_peak_mb(),
        }
        reference = getattr(self, "reference", None)
        if reference is not None:  # a LoRA policy's shared base (BaseModel) is no copy: 0
            shared = getattr(reference, "engine", None) is self.engine
            stats["ref_param_mb"] = 0.0 if shared else _bytes(local_params(reference.module)) / MB
        self.stats_dir.mkdir(parents=True, exist_ok=True)
        (self.stats_dir / f"rank{self.rank}.json").write_text(json.dumps(stats))


def trainer_class(job: str):
    if job == "sft":
        from rlhf_dist.trainers.sft import SFTTrainer as base
    elif job == "dpo":
        from rlhf_dist.trainers.dpo import DPOTrainer as base
    else:
        raise SystemExit(f"_rank_entry: unknown job {job!r} (sft, dpo)")
    return type(f"Bench{base.__name__}", (BenchMixin, base), {})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench/_rank_entry.py")
    parser.add_argument(
        "--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS
    )  # the deepspeed launcher adds it
    parser.add_argument("--stats-dir", required=True)
    parser.add_argument(
        "--full-finish",
        action="store_true",
        help="also run the end-of-run eval, checkpoint and export",
    )
    parser.add_argument("job", choices=["sft", "dpo"])
    parser.add_argument("-c", "--config")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)

    from rlhf_dist.config import load_config

    cfg = load_config(args.config, args.overrides)
    cls = trainer_class(args.job)
    cls.stats_dir, cls.full_finish = Path(args.stats_dir), args.full_finish
    if not args.full_finish:
        cfg.checkpoint.export_hf = False
    cls(cfg).fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())

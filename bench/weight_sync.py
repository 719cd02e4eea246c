"""Weight sync to a vLLM engine: one parameter per collective against buckets of
``rollout.sync_bucket_mb``, in seconds per sync.  One JSON line (every case in ``cases``).

    .venv-vllm/bin/python bench/weight_sync.py --repeats 5     # 8x512, actor ZeRO-3 x 2 ranks
    .venv-vllm/bin/python bench/weight_sync.py --sizes 8x512,qwen0.5b --zero 0 --ranks 1

The real path of a PPO run: a local Ray, the actor group (``--ranks`` ranks, ZeRO
``--zero``, fp32, one CPU each) and one vLLM engine (one CPU), the weight group between them
(gloo), ``RolloutEngines.sync_from`` timed from the driver.  Models are random, built from a
config (no download) and saved with the toy tokenizer: ``LxH`` is a llama of L layers, H
wide, head size 64, MLP 4 x H (``bench/rollout.py``'s); ``qwen0.5b`` is Qwen2.5-0.5B's shape
(24 layers x 896, 14 heads, 2 KV heads, MLP 4864, vocab 151936, tied embeddings: 494 M
parameters; its actor at ZeRO-3 over 2 ranks does not fit beside the engine in 24 GiB, hence
``--zero 0 --ranks 1`` above).

Per case, after one untimed sync of each mode, ``--repeats`` rounds each time one sync of
every mode, the order reversed every other round: ``per_parameter`` (``sync_bucket_mb=0``),
``bucketed_<MB>`` for each of ``--bucket-mb``, ``checked_<MB>`` (buckets of the first size,
the engine's CRC32 of every parameter compared with the actor's: the cost of a sync that
``rollout.verify_sync_every`` checks), ``vllm_reload_only`` (no sync: vLLM's
``reload_weights`` of the same tensors, already in the engine's memory -- the floor any
transfer adds to).  Reported: the median, min and max seconds of each mode, each bucket
size's per-round speed-up over the per-parameter sync (min, median, max), and the 1-minute
load average before and after the case (this machine is shared: a load above the core count
means the numbers waited for a core).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/weight_sync.py", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="8x512", help="comma list: LxH or qwen0.5b")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds of every mode")
    p.add_argument(
        "--bucket-mb",
        default="4,16,64",
        help="comma list: the bucketed modes' sizes in MB (the first also checked)",
    )
    p.add_argument("--zero", type=int, default=3, help="the actor's ZeRO stage")
    p.add_argument("--ranks", type=int, default=2, help="the actor's ranks")
    return p.parse_args(argv)


def build_model(size: str, directory: str) -> int:
    """A random model of ``size`` saved to ``directory`` with the toy tokenizer; its number
    of parameters."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from rlhf_dist.config import ModelConfig, TinyModelConfig
    from rlhf_dist.models import load_causal_lm, load_tokenizer

    section = ModelConfig()
    tokenizer = load_tokenizer(section)
    torch.manual_seed(0)
    if size == "qwen0.5b":
        config = Qwen2Config(
            hidden_size=896,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            intermediate_size=4864,
            vocab_size=151936,
            tie_word_embeddings=True,
            max_position_embeddings=512,
            architectures=["Qwen2ForCausalLM"],
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = AutoModelForCausalLM.from_config(config)
    else:
        layers, hidden = (int(x) for x in size.split("x"))
        section = ModelConfig(
            tiny=TinyModelConfig(
                hidden_size=hidden,
                num_layers=layers,
                num_heads=max(1, hidden // 64),
                intermediate_size=4 * hidden,
                max_position_embeddings=512,
            )
        )
        model = load_causal_lm(section, tokenizer)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    gc.collect()
    return params


def _set_bucket_mb(roles, mb: float) -> None:
    """``rollout.sync_bucket_mb`` in the actor's ranks and the engine (both plan buckets)."""
    import ray

    def set_mb(worker, value):
        worker.cfg.rollout.sync_bucket_mb = value

    ray.get(
        [
            w.__ray_call__.remote(set_mb, mb)
            for w in roles.actor.workers + roles.rollout.engines.workers
        ]
    )


def _reload_in_worker(worker, specs) -> float:
    """In the vLLM worker: seconds of ``reload_weights`` of random tensors of ``specs``."""
    import torch

    tensors = [(name, torch.randn(shape).to(getattr(torch, dtype))) for name, dtype, shape in specs]
    started = time.perf_counter()
    worker.model_runner.reload_weights(weights_iterator=iter(tensors))
    return time.perf_counter() - started


def _reload_only(engine_worker, specs) -> float:
    return engine_worker.engine.llm.collective_rpc(_reload_in_worker, args=(specs,))[0]


def _stats(values: List[float]) -> Dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "all": [round(v, 4) for v in values],
    }


def bench_size(args, size: str) -> dict:
    import ray

    from rlhf_dist.config import load_config, resolve_ppo_sizes
    from rlhf_dist.models import load_tokenizer
    from rlhf_dist.rollout.weight_buckets import bucket_bytes, plan_buckets, total_bytes
    from rlhf_dist.trainers.ppo import learner_train_section
    from rlhf_dist.workers.cluster import cpus_needed, create_roles, start_ray, stop
    from rlhf_dist.workers.vllm_rollout import VLLMRollout

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="weight_sync_") as directory:
        params = build_model(size, directory)
        cfg = load_config(
            str(REPO / "configs" / "tiny" / "ppo.yaml"),
            [
                f"output_dir={directory}/out",
                f"model.name_or_path={directory}",
                "rollout.backend=vllm",
                "logging.backend=none",
                "resources.timeout_s=1800",
                f"deepspeed.zero_stage={args.zero}",
                f"resources.actor.devices_per_node={args.ranks}",
                "resources.rollout.kv_cache_gb=0.25",
                "rollout.verify_sync_every=0",
                "rollout.rollout_batch_size=8",
                "ppo.mini_batch_size=8",
            ],
        )
        resolve_ppo_sizes(cfg)
        tokenizer = load_tokenizer(cfg.model)
        rollout = VLLMRollout(cfg, tokenizer)
        started = start_ray(None, cpus_needed(cfg, ["actor"], rollout))
        rollout.check()
        roles = create_roles(
            cfg, with_reward=False, with_critic=False, with_reference=False, rollout=rollout
        )
        try:
            roles.actor.build(
                learner_train_section(cfg, cfg.train.lr, args.ranks), total_steps=10
            ).result()
            rollout.connect()
            engines, specs = roles.rollout.engines, roles.actor.weight_specs()
            mbs = [float(mb) for mb in args.bucket_mb.split(",")]
            sizes = {
                "per_parameter": 0.0,
                **{f"bucketed_{mb:g}": mb for mb in mbs},
                f"checked_{mbs[0]:g}": mbs[0],
            }
            modes, version = [*sizes, "vllm_reload_only"], 0

            def sync(mode: str) -> float:
                nonlocal version
                if mode == "vllm_reload_only":
                    return ray.get(engines.workers[0].__ray_call__.remote(_reload_only, specs))
                _set_bucket_mb(roles, sizes[mode])
                checked = mode.startswith("checked")
                engines.cfg.rollout.verify_sync_every = 1 if checked else 0
                version += 1
                seconds = engines.sync_from(roles.actor, version)
                assert (engines.reports[0][0].checksums is not None) == checked
                return seconds

            first = {mode: round(sync(mode), 4) for mode in modes}  # untimed warm-up
            times: Dict[str, List[float]] = {mode: [] for mode in modes}
            for repeat in range(args.repeats):
                for mode in modes if repeat % 2 == 0 else modes[::-1]:
                    times[mode].append(sync(mode))
        finally:
            stop(roles, started)
            if ray.is_initialized() and started:
                ray.shutdown()
    speedup = {}
    for mb in mbs:
        ratios = [p / b for p, b in zip(times["per_parameter"], times[f"bucketed_{mb:g}"])]
        speedup[f"{mb:g}"] = {
            "min": round(min(ratios), 2),
            "median": round(statistics.median(ratios), 2),
            "max": round(max(ratios), 2),
        }
    return {
        "size": size,
        "params": params,
        "tensors": len(specs),
        "mbytes": round(total_bytes(plan_buckets(specs, 0)) / 2**20, 1),
        "buckets": {f"{mb:g}": len(plan_buckets(specs, bucket_bytes(mb))) for mb in mbs},
        "seconds": {mode: _stats(times[mode]) for mode in modes},
        "speedup_over_per_parameter": speedup,
        "first_sync_s": first,
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    stdout = sys.stdout
    cases = []
    for size in [s for s in args.sizes.split(",") if s]:
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # vLLM logs to stdout: the JSON line only
            try:
                case = bench_size(args, size)
            except Exception as err:  # noqa: BLE001 - a case that cannot run says why
                case = {"size": size, "error": f"{type(err).__name__}: {err}"}
        case["case_wall_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps(case), file=sys.stderr, flush=True)
        cases.append(case)
    print(
        json.dumps(
            {
                "bench": "weight_sync",
                "zero_stage": args.zero,
                "actor_ranks": args.ranks,
                "dtype": "float32",
                "repeats": args.repeats,
                "cpus": os.cpu_count(),
                "cases": cases,
            }
        ),
        file=stdout,
        flush=True,
    )
    return 0


if __name__ == "__main__":  # vLLM's engine core may be spawned: the guard is required
    sys.exit(main())

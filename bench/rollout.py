"""Rollout throughput: HF ``generate`` against vLLM on the same model, prompts and lengths,
then (``--ppo``) seconds per PPO / GRPO iteration with each backend.  One JSON line each.

    .venv-vllm/bin/python bench/rollout.py                          # tiny and 8 x 512
    .venv-vllm/bin/python bench/rollout.py --sizes 4x128 --repeats 5
    .venv-vllm/bin/python bench/rollout.py --ppo --iterations 8     # + bench/ppo.py cases

Generation (``gen`` lines): a random llama of each ``--sizes`` entry (layers x hidden, head
size 64, MLP 4 x hidden) saved to disk with the toy tokenizer; both engines in this process
on the same threads, vLLM with its engine core in-process.  ``--prompts`` toy prompts x
``--samples`` samples, exactly ``--new-tokens`` new tokens (EOS masked until then, so both
produce the same number of tokens), sampled at temperature 1.  HF and vLLM calls alternate
``--repeats`` times after one warm-up call each; each line has both medians, the per-pair
ratio vLLM/HF (min / median / max) and the 1-minute load average, flagged when above 0.5
per core before the run (another job on the machine makes the pairs disagree).

Iterations (``ppo`` lines): ``bench/ppo.py --cases ray,ray_vllm,ray_grpo,ray_grpo_vllm``
(real driver, 4 groups + one engine, one rank each), its lines passed through: per-phase
seconds (generate / sync / score / learn) per iteration of each backend and their ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/rollout.py", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="4x128,8x512", help="comma list of LAYERSxHIDDEN")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--samples", type=int, default=4, help="samples per prompt")
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--repeats", type=int, default=3, help="interleaved HF / vLLM pairs")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--ppo", action="store_true", help="also the PPO/GRPO iteration cases")
    p.add_argument("--iterations", type=int, default=8, help="PPO iterations (--ppo)")
    p.add_argument("--ppo-repeats", type=int, default=3, help="interleaved repeats (--ppo)")
    return p.parse_args(argv)


def build_model(layers: int, hidden: int, directory: str):
    """A random llama (head size 64) with the toy tokenizer, saved to ``directory``."""
    import torch

    from rlhf_dist.config import ModelConfig, TinyModelConfig
    from rlhf_dist.models import load_causal_lm, load_tokenizer

    section = ModelConfig(
        tiny=TinyModelConfig(
            hidden_size=hidden,
            num_layers=layers,
            num_heads=max(1, hidden // 64),
            intermediate_size=4 * hidden,
            max_position_embeddings=512,
        )
    )
    tokenizer = load_tokenizer(section)
    torch.manual_seed(0)
    model = load_causal_lm(section, tokenizer).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def toy_prompt_batch(tokenizer, n: int):
    from rlhf_dist.config import DataConfig
    from rlhf_dist.data import PromptCollator, build_prompt_dataset

    rows = build_prompt_dataset(DataConfig(), tokenizer, split="train")
    batch = PromptCollator(tokenizer.pad_token_id)([rows[i % len(rows)] for i in range(n)])
    return batch["input_ids"], batch["attention_mask"]


def timed(generate) -> Dict[str, float]:
    start = time.perf_counter()
    batch = generate()
    seconds = time.perf_counter() - start
    tokens = float(batch["action_mask"].sum())
    return {"s": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def bench_size(args, size: str) -> dict:
    import torch

    from rlhf_dist.config import RolloutConfig, RolloutResources
    from rlhf_dist.rollout import HFGenerator
    from rlhf_dist.rollout.generate import stop_ids
    from rlhf_dist.rollout.vllm_engine import VLLMRolloutEngine

    layers, hidden = (int(x) for x in size.split("x"))
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as directory:
        model, tokenizer = build_model(layers, hidden, directory)
        ids, mask = toy_prompt_batch(tokenizer, args.prompts)
        rollout = RolloutConfig(
            n_samples_per_prompt=args.samples,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
        )
        started = time.perf_counter()
        vllm = VLLMRolloutEngine(
            directory,
            rollout,
            RolloutResources(max_model_len=ids.shape[1] + args.new_tokens, kv_cache_gb=2),
            "float32",
            seed=0,
            stop=stop_ids(rollout, tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
        startup = time.perf_counter() - started
        hf = HFGenerator(model, tokenizer, rollout)
        run = {
            "hf": lambda s: hf.generate(ids, mask, generator_seed=s),
            "vllm": lambda s: vllm.generate(ids, mask, seed=s),
        }
        first = {name: timed(lambda: fn(0))["s"] for name, fn in run.items()}  # warm-up
        pairs: List[Dict[str, dict]] = []
        for repeat in range(args.repeats):
            pairs.append({name: timed(lambda: fn(repeat + 1)) for name, fn in run.items()})
    ratios = [p["vllm"]["tokens_per_s"] / p["hf"]["tokens_per_s"] for p in pairs]
    median = {name: statistics.median(p[name]["tokens_per_s"] for p in pairs) for name in run}
    return {
        "bench": "rollout",
        "case": "gen",
        "model": f"{layers}x{hidden}",
        "prompts": args.prompts,
        "samples": args.samples,
        "new_tokens": args.new_tokens,
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "hf_tokens_per_s": round(median["hf"], 1),
        "vllm_tokens_per_s": round(median["vllm"], 1),
        "ratio_vllm_hf": {
            "min": round(min(ratios), 3),
            "median": round(statistics.median(ratios), 3),
            "max": round(max(ratios), 3),
        },
        "first_call_s": {k: round(v, 2) for k, v in first.items()},
        "vllm_startup_s": round(startup, 1),
        "loadavg_1m_start": round(load, 2),
        "unreliable_load": load > 0.5 * (os.cpu_count() or 1),
    }


def ppo_lines(args) -> None:
    cmd = [
        sys.executable,
        str(HERE / "ppo.py"),
        "--cases",
        "ray,ray_vllm,ray_grpo,ray_grpo_vllm",
        "--iterations",
        str(args.iterations),
        "--repeats",
        str(args.ppo_repeats),
    ]
    done = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    for line in done.stdout.splitlines():
        print(line, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    # vLLM drops an in-process engine's torch threads to 1 unless OMP_NUM_THREADS says
    # otherwise: pin both engines to the same thread count
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    stdout = sys.stdout
    for size in [s for s in args.sizes.split(",") if s]:
        with contextlib.redirect_stdout(sys.stderr):  # vLLM logs to stdout: JSON lines only
            record = bench_size(args, size)
        print(json.dumps(record), file=stdout, flush=True)
    if args.ppo:
        ppo_lines(args)
    return 0


if __name__ == "__main__":  # vLLM's engine core is spawned: the guard is required
    sys.exit(main())

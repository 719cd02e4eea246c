"""vLLM engine: a prompt's n samples as one request (``n=n``, vLLM seeds them itself) against
one request per sampled row (``n=1``, a seed each: what ``VLLMRolloutEngine`` sends since
2026-12-07), same engine, prompts and lengths, interleaved repeats.  One JSON line.

    .venv-vllm/bin/python bench/vllm_requests.py                 # 8 x 512, 32 prompts x 4
    .venv-vllm/bin/python bench/vllm_requests.py --layers 4 --hidden 128 --repeats 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch
    from vllm import LLM, SamplingParams

    from rlhf_dist.config import ModelConfig, TinyModelConfig
    from rlhf_dist.models import load_causal_lm, save_model
    from rlhf_dist.toy import ToyTask, toy_tokenizer

    tok = toy_tokenizer()
    torch.manual_seed(0)
    tiny = TinyModelConfig(
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.hidden // 64,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=256,
    )
    directory = tempfile.mkdtemp()
    save_model(load_causal_lm(ModelConfig(tiny=tiny), tok), tok, directory)
    llm = LLM(
        model=directory,
        skip_tokenizer_init=True,
        dtype="float32",
        enforce_eager=True,
        max_model_len=128,
        kv_cache_memory_bytes=2**30,
        seed=0,
    )
    ids = [
        tok(r["prompt"])["input_ids"] for r in ToyTask(seed=0).prompt_rows("train")[: args.prompts]
    ]
    n, new = args.samples, args.new_tokens

    def params(count: int, seed: int) -> SamplingParams:
        return SamplingParams(
            n=count,
            temperature=1.0,
            max_tokens=new,
            min_tokens=new,
            seed=seed,
            logprobs=0,
            detokenize=False,
        )

    def per_prompt(seed: int) -> None:
        llm.generate(
            [{"prompt_token_ids": i} for i in ids],
            [params(n, seed + k * n) for k in range(len(ids))],
            use_tqdm=False,
        )

    def per_row(seed: int) -> None:
        rows = [{"prompt_token_ids": i} for i in ids for _ in range(n)]
        llm.generate(rows, [params(1, seed + j) for j in range(len(rows))], use_tqdm=False)

    cases = {"per_prompt": per_prompt, "per_row": per_row}
    for run in cases.values():  # warm-up
        run(0)
    tokens_per_s = {name: [] for name in cases}
    for repeat in range(args.repeats):
        for name, run in cases.items():
            start = time.perf_counter()
            run(100 + repeat)
            tokens_per_s[name].append(len(ids) * n * new / (time.perf_counter() - start))
    ratios = [a / b for a, b in zip(tokens_per_s["per_row"], tokens_per_s["per_prompt"])]
    print(
        json.dumps(
            {
                "bench": "vllm_requests",
                "model": f"{args.layers}x{args.hidden}",
                "prompts": len(ids),
                "samples": n,
                "new_tokens": new,
                "tokens_per_s": {k: [round(v) for v in vs] for k, vs in tokens_per_s.items()},
                "ratio_per_row_per_prompt": {
                    "min": round(min(ratios), 3),
                    "median": round(statistics.median(ratios), 3),
                    "max": round(max(ratios), 3),
                },
                "loadavg_1m": os.getloadavg()[0],
            }
        )
    )


if __name__ == "__main__":
    main()

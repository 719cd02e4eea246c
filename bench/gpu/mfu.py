"""bench_train.py's JSON lines -> the same lines plus one ``gpu_mfu`` line per case: model
FLOPs utilisation = tokens/s x FLOPs per token / the GPU's peak.

FLOPs per token, dense, from the parameter count N (``param_numel_total``): 6N for SFT
(forward + backward), 8N for DPO (the policy's 6N and the frozen reference's forward, 2N);
attention's sequence-length term is left out (sequences here are < 100 tokens).  Peak: 989.5
TFLOP/s, the H100/H200 SXM dense bf16 figure (``--peak-tflops`` for another part).

    python3 bench/gpu/mfu.py bench_train.jsonl [--peak-tflops 989.5]
"""

from __future__ import annotations

import argparse
import json
import sys

FLOPS_PER_PARAM = {"sft": 6, "dpo": 8}


def mfu_line(rec: dict, peak_tflops: float) -> dict:
    flops = FLOPS_PER_PARAM[rec["job"]] * rec["param_numel_total"]
    achieved = rec["tokens_per_s"] * flops
    return {
        "bench": "gpu_mfu",
        "job": rec["job"],
        "zero": rec["zero"],
        "variant": rec["variant"],
        "tokens_per_s": rec["tokens_per_s"],
        "params": rec["param_numel_total"],
        "flops_per_token": flops,
        "tflops": achieved / 1e12,
        "mfu": achieved / (peak_tflops * 1e12),
        "peak_tflops": peak_tflops,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("jsonl")
    p.add_argument("--peak-tflops", type=float, default=989.5)
    args = p.parse_args(argv)
    for line in open(args.jsonl):
        rec = json.loads(line)
        print(json.dumps(rec))
        if rec.get("bench") == "train" and "error" not in rec and rec.get("job") in FLOPS_PER_PARAM:
            print(json.dumps(mfu_line(rec, args.peak_tflops)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# The GPU checks of issue 14 (items 4 and 5), as ONE run on a lent GPU machine -- prepared on
# CPU, not yet run on a GPU. Before the session: bash bench/gpu/fetch_wheels.sh (here). Then
# with the device tool: run(command="bash bench/gpu/check.sh", carry=[".gpu-wheels"]).
# Writes $OUT/gpu_check.jsonl (bench_train.py's lines + one gpu_mfu line per case) and logs.
#
# What it measures: SFT and DPO tokens/s and MFU of a 0.5B-shaped llama (Qwen2.5-0.5B's
# sizes: 24 layers x 896, 14 heads, MLP 4864; random weights, the toy tokenizer's 832-token
# vocabulary, so the LM head is small) under ZeRO-2 and ZeRO-3, bf16, sdpa attention, padded
# and padding-free batches (train.padding_free), one GPU. Not covered (their packages are too
# large to carry): flash-attention-2, Ray (PPO/GRPO), vLLM.
#
# First, preflight.py: every import and requirement the run needs (reproduced on CPU by
# bench/gpu/image_env.sh against the image's packages + these wheels); it stops the run there,
# its JSON line in $OUT/preflight.json, rather than spend device time on a broken environment.
#
# Knobs for a dry run on a CPU: SKIP_ENV=1 (use the active environment), SIZE, EXTRA, STEPS.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
if [ -z "${SKIP_ENV:-}" ]; then
    python3 -m venv --system-site-packages /tmp/gpuenv && . /tmp/gpuenv/bin/activate
    pip install -q --no-index --no-deps --no-build-isolation .gpu-wheels/* > "$OUT/pip.log" 2>&1
    pip install -q --no-index --no-deps --no-build-isolation -e . >> "$OUT/pip.log" 2>&1
    nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1
fi
python3 bench/gpu/preflight.py > "$OUT/preflight.json" 2> "$OUT/preflight.log" || {
    cat "$OUT/preflight.json"; echo "check.sh: preflight failed (see preflight.json)" >&2
    exit 1; }
python3 - > "$OUT/env.json" <<'PY'
import json, torch, transformers
info = {"torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.cuda.is_available()}
if torch.cuda.is_available():
    info.update(device=torch.cuda.get_device_name(0), bf16=torch.cuda.is_bf16_supported())
try:
    import deepspeed
    info["deepspeed"] = deepspeed.__version__
except Exception as err:  # the line says why, the run goes on
    info["deepspeed_error"] = repr(err)
print(json.dumps(info))
PY
cat "$OUT/env.json"
SIZE=${SIZE:---hidden 896 --layers 24 --heads 14 --intermediate 4864}
EXTRA=${EXTRA:-deepspeed.bf16=true}
python3 bench/bench_train.py --jobs sft,dpo --zero 2,3 --ranks 1 --steps "${STEPS:-12}" \
    --warmup 3 --threads 4 --batch 16 --variants default,packed $SIZE \
    --out-dir /tmp/gpu_bench model.attn_implementation=sdpa $EXTRA \
    > "$OUT/bench_train.jsonl" 2> "$OUT/bench_train.log"
python3 bench/gpu/mfu.py "$OUT/bench_train.jsonl" > "$OUT/gpu_check.jsonl"
cat "$OUT/gpu_check.jsonl"

#!/usr/bin/env bash
# The toy agent task's recipe (configs/tiny/agent_calculator.yaml's header) with one seed:
# data, multi-turn SFT, GRPO against env.name: toy_calculator, eval --env of both models on
# the held-out pairs.  Prints one JSON line: seconds per stage, held-out success rate / tool
# calls / pass@k before (sft) and after (grpo), the training reward per iteration.
#   bash bench/agent_recipe.sh SEED [OUT_ROOT]      (default OUT_ROOT: /tmp/agent_recipe)
set -euo pipefail
seed=$1; root=${2:-/tmp/agent_recipe}; out=$root/s$seed
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
quiet=(logging.backend=none logging.progress_bar=false)
export OMP_NUM_THREADS=1
mkdir -p "$out"
[ -f "$root/data/sft.jsonl" ] || "$py" -m rlhf_dist.toy.tool_task "$root/data" \
    --num-prompts 2048 --eval-ratio 0.0625 --direct-ratio 0.5
t0=$(date +%s)
"$py" -m rlhf_dist.cli sft -c "$repo/configs/tiny/sft.yaml" output_dir="$out/sft" seed="$seed" \
    data.path="$root/data/sft.jsonl" data.eval_ratio=0 data.max_length=128 \
    data.max_prompt_length=48 train.epochs=100 train.max_steps=600 train.train_batch_size=32 \
    train.micro_batch_size=32 train.eval_every=0 deepspeed.zero_stage=0 \
    "model.tiny={arch: llama, hidden_size: 64, num_layers: 4, num_heads: 2, intermediate_size: 256}" \
    "${quiet[@]}" > "$out/sft.log" 2>&1
t1=$(date +%s)
"$py" -m rlhf_dist.cli ppo -c "$repo/configs/tiny/agent_calculator.yaml" output_dir="$out/grpo" \
    seed="$seed" model.name_or_path="$out/sft/model" data.path="$root/data/train.jsonl" \
    "${quiet[@]}" > "$out/grpo.log" 2>&1
t2=$(date +%s)
"$py" -m rlhf_dist.cli eval -c "$repo/configs/tiny/agent_calculator.yaml" \
    --models "sft=$out/sft/model,grpo=$out/grpo/model" --prompts "$root/data/eval.jsonl" \
    --n-samples-per-prompt 4 --output-dir "$out/eval" --no-wandb > "$out/eval.log" 2>&1
t3=$(date +%s)
"$py" - "$out" "$seed" $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) <<'PY'
import json
import sys

out, seed, times = sys.argv[1], int(sys.argv[2]), [int(t) for t in sys.argv[3:]]
metrics = json.load(open(f"{out}/eval/eval.json"))["metrics"]
rows = [json.loads(line) for line in open(f"{out}/grpo/metrics.jsonl")]
line = {"seed": seed, **dict(zip(("sft_s", "grpo_s", "eval_s"), times)),
        **{f"{key}_{model}": round(metrics[model][key], 3) for model in ("sft", "grpo")
           for key in ("success_rate", "tool_calls_mean", "success_pass_at_k")},
        "train_reward": [round(r["reward/score_mean"], 3) for r in rows
                         if "reward/score_mean" in r]}
print(json.dumps(line))
PY

#!/usr/bin/env bash
# Every benchmark of bench/, one JSON line per case on stdout (progress on stderr).
#   bench/run_all.sh                 # from the repository root; about 15-40 min on 2 cores
#   bench/run_all.sh > results.jsonl
# 1. SFT + DPO x ZeRO 0/2/3 x 1/2 ranks, and TRL's DPOTrainer on the same pairs (+ ratio and
#    ZeRO-3/ZeRO-0 memory lines);
# 2. the TRL ratio again, DPO ZeRO-0 on 1 rank, 3 interleaved repeats (medians), for each
#    DPO variant (padded layout, default shared-prompt layout with length-grouped batches,
#    ungrouped, + precomputed reference), plus TRL with precompute_ref_log_probs;
# 3. bench/profile_dpo.py: where a DPO step's time goes, and prototypes of the speed levers;
# 4. bench/ppo.py: PPO on Ray (4 groups) vs the same maths in one process, GRPO vs TRL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${BENCH_OUT:-outputs/bench}
"$PY" bench/bench_train.py --with-trl --out-dir "$OUT/grid" "$@"
"$PY" bench/bench_train.py --jobs dpo --zero 0 --ranks 1 --with-trl --trl-precompute \
    --variants padded,default,ungrouped,precomputed --repeats 3 \
    --out-dir "$OUT/trl_ratio" "$@"
"$PY" bench/profile_dpo.py --threads 1 --steps 8 --rounds 3 2>/dev/null | grep '^{'
"$PY" bench/ppo.py --repeats 3
# 5. bench/rollout.py (in the vLLM virtualenv): HF vs vLLM generation, and PPO/GRPO
#    iterations with each backend
VLLM_PY=${VLLM_PYTHON:-.venv-vllm/bin/python}
if [ -x "$VLLM_PY" ]; then "$VLLM_PY" bench/rollout.py --ppo; fi

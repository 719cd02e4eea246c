#!/usr/bin/env bash
# launch/local.sh — one machine, N processes, through the DeepSpeed launcher (no Ray, no ssh).
#
# usage: launch/local.sh N STAGE CONFIG [key=value ...]
#   N        processes on this machine (one per GPU; on a CPU-only machine, N CPU processes)
#   STAGE    sft | rm | dpo   (any rlhf-dist trainer command)
#   CONFIG   YAML config, e.g. configs/tiny/sft.yaml
#   key=value overrides forwarded to rlhf-dist, e.g. output_dir=/tmp/run train.max_steps=4
#
# Runs:  deepspeed --num_gpus N --master_port $MASTER_PORT --module rlhf_dist.cli STAGE -c CONFIG ...
# The same command works on a CPU-only machine: DeepSpeed picks its CPU accelerator and the
# processes talk over gloo (its CPU ops compile once on first use, cached in TORCH_EXTENSIONS_DIR).
#
# environment:
#   MASTER_PORT   rendezvous port (default 29500); pick another when two jobs share a machine
#   DS_ARGS       extra deepspeed launcher arguments, e.g. "--enable_each_rank_log=/tmp/logs"
#                 (--include/--exclude cannot be combined with --num_gpus: to pick GPUs, call
#                 deepspeed --include localhost:2,3 --module rlhf_dist.cli ... directly)
#   DRY_RUN=1     print the command instead of running it
#
# example:
#   launch/local.sh 2 sft configs/tiny/sft.yaml output_dir=/tmp/sft train.max_steps=4 logging.backend=none
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check_args 3 "$@"
nproc="$1" stage="$2" config="$3"
shift 3
[[ "$nproc" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$nproc'"
[[ -f "$config" ]] || die "config '$config' does not exist"
need_tool deepspeed

# shellcheck disable=SC2086  # DS_ARGS is a list of words on purpose
run deepspeed --num_gpus "$nproc" --master_port "${MASTER_PORT:-29500}" ${DS_ARGS:-} \
  --module rlhf_dist.cli "$stage" -c "$config" "$@"

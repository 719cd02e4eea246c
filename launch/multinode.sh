#!/usr/bin/env bash
# launch/multinode.sh — several machines listed in a DeepSpeed hostfile, through the DeepSpeed
# launcher (SFT, RM, DPO; no Ray).
#
# usage: launch/multinode.sh HOSTFILE STAGE CONFIG [key=value ...]
#   HOSTFILE  lines "host slots=N" (see hostfile.example); the first host is the master
#   STAGE     sft | rm | dpo
#   CONFIG    YAML config; key=value overrides are forwarded to rlhf-dist
#
# Runs (on this machine, which reaches every host over ssh):
#   deepspeed --hostfile HOSTFILE --master_addr <first host> --master_port $MASTER_PORT \
#             --module rlhf_dist.cli STAGE -c CONFIG ...
# Requirements on every host:
#   - passwordless ssh from this machine (ssh -o BatchMode=yes HOST hostname must work), and
#     pdsh installed here (DeepSpeed's default multi-node backend; or DS_ARGS="--launcher openmpi")
#   - the repository at the same path and the same virtualenv at the same path
#     (the launcher runs "cd $PWD; <this python> -m deepspeed.launcher.launch ..." on each host)
#   - output_dir (checkpoints, metrics, exported model) on a filesystem shared by all hosts
#   - environment for the workers: DeepSpeed forwards NCCL_*, PYTHON* and the lines of
#     ~/.deepspeed_env or ./.deepspeed_env (KEY=value), e.g. WANDB_API_KEY, HF_HOME
# NCCL hints: NCCL_SOCKET_IFNAME=eth0 (the interface the hosts share), NCCL_IB_HCA=mlx5 or
#   NCCL_IB_DISABLE=1 without InfiniBand, NCCL_DEBUG=INFO to see what NCCL picked.
#
# Without ssh: run this script on every host yourself with NODE_RANK=0,1,... (same hostfile,
# same MASTER_ADDR/MASTER_PORT); each host then starts only its own processes (--no_ssh).
#
# environment:
#   MASTER_ADDR   address the other hosts reach the first one at (default: the first host)
#   MASTER_PORT   rendezvous port (default 29500)
#   NODE_RANK     this host's index in the hostfile; set it to launch without ssh
#   DS_ARGS       extra deepspeed launcher arguments, e.g. "--launcher openmpi" or "--ssh_port 2222"
#   DRY_RUN=1     print the command instead of running it
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check_args 3 "$@"
hostfile="$1" stage="$2" config="$3"
shift 3
read_hostfile "$hostfile"
[[ -f "$config" ]] || die "config '$config' does not exist"
need_tool deepspeed

master="${MASTER_ADDR:-${HOSTS[0]}}"
if is_local_host "$master" && [[ -z "${MASTER_ADDR:-}" ]]; then
  for h in "${HOSTS[@]:1}"; do
    is_local_host "$h" || die "the first host '${HOSTS[0]}' is a loopback name but '$h' is" \
      "another machine: write the first host's real name in $hostfile or set MASTER_ADDR"
  done
fi

launch=(--hostfile "$hostfile" --master_addr "$master" --master_port "${MASTER_PORT:-29500}")
if [[ -n "${NODE_RANK:-}" ]]; then
  [[ "$NODE_RANK" =~ ^[0-9]+$ ]] && (( NODE_RANK < ${#HOSTS[@]} )) ||
    die "NODE_RANK=$NODE_RANK is not a host index of $hostfile (0..$(( ${#HOSTS[@]} - 1 )))"
  launch+=(--no_ssh --node_rank "$NODE_RANK")
elif (( ${#HOSTS[@]} > 1 )) && [[ " ${DS_ARGS:-} " != *" --launcher "* ]] &&
  [[ "${DRY_RUN:-0}" != 1 ]] && ! command -v pdsh >/dev/null 2>&1; then
  die "pdsh is not installed (DeepSpeed's default multi-node backend): install it," \
    "or set DS_ARGS=\"--launcher openmpi\", or run with NODE_RANK=i on each host"
fi

# shellcheck disable=SC2086  # DS_ARGS is a list of words on purpose
run deepspeed "${launch[@]}" ${DS_ARGS:-} --module rlhf_dist.cli "$stage" -c "$config" "$@"

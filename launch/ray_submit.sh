#!/usr/bin/env bash
# launch/ray_submit.sh — submit an rlhf-dist job to a running Ray cluster (ray job submit).
#
# usage: launch/ray_submit.sh ADDRESS STAGE CONFIG [key=value ...]
#   ADDRESS  the head: HOST (dashboard port $RAY_DASHBOARD_PORT, default 8265), HOST:PORT,
#            or a full http(s):// URL
#   STAGE    any rlhf-dist command (ppo, dpo with dpo.mode=ray, ...; forwarded as is)
#   CONFIG   YAML config, relative to the repository root (the job runs in a copy of it)
#
# Runs:  ray job submit --address http://ADDRESS:8265 --working-dir <repo root> \
#            -- rlhf-dist STAGE -c CONFIG key=value ...
# The working directory is uploaded (.gitignore'd paths such as .venv and outputs/ are left
# out); rlhf_dist itself must be installed on every node (same virtualenv as `ray start`).
# Inside the job RAY_ADDRESS points at the cluster, so ray.init() joins it.
# With token authentication (see launch/ray_cluster.sh) the client needs RAY_AUTH_MODE=token;
# this script sets it when a token file exists and RAY_AUTH_MODE is unset.
#
# environment:
#   RAY_DASHBOARD_PORT  default dashboard port when ADDRESS has none (default 8265)
#   WORKING_DIR         directory to upload (default: the repository root)
#   RAY_SUBMIT_ARGS     extra `ray job submit` arguments, e.g. "--no-wait" or
#                       "--runtime-env-json '{\"env_vars\": {\"WANDB_MODE\": \"offline\"}}'"
#                       (word-split; for JSON with spaces call ray job submit directly)
#   DRY_RUN=1           print the command instead of running it
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check_args 3 "$@"
address="$1" stage="$2" config="$3"
shift 3
case "$address" in
  http://* | https://*) url="$address" ;;
  *:*) url="http://$address" ;;
  *) url="http://$address:${RAY_DASHBOARD_PORT:-8265}" ;;
esac
workdir="${WORKING_DIR:-$RLHF_REPO}"
[[ -f "$workdir/$config" ]] || die "config '$config' not found under the working directory $workdir"
need_tool ray

token_file="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
if [[ -z "${RAY_AUTH_MODE:-}" ]] && { [[ -n "${RAY_AUTH_TOKEN:-}" ]] || [[ -f "$token_file" ]]; }; then
  export RAY_AUTH_MODE=token
fi

# shellcheck disable=SC2086  # RAY_SUBMIT_ARGS is a list of words on purpose
run ray job submit --address "$url" --working-dir "$workdir" ${RAY_SUBMIT_ARGS:-} \
  -- rlhf-dist "$stage" -c "$config" "$@"

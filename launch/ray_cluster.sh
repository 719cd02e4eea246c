#!/usr/bin/env bash
# launch/ray_cluster.sh — start or stop a Ray cluster on the hosts of a DeepSpeed-style hostfile
# (for the Ray modes: rlhf-dist ppo, DPO on Ray).
#
# usage: launch/ray_cluster.sh start|stop|status HOSTFILE
#   start   first host:  ray start --head --port $RAY_PORT --num-gpus <its slots>
#           other hosts: ray start --address <head>:$RAY_PORT --num-gpus <their slots>
#   stop    ray stop on every host (workers first). NB: `ray stop` stops EVERY Ray process on
#           the host, whichever cluster it belongs to.
#   status  ray status against the head
# Hosts named localhost, 127.0.0.1 or this machine's name are run here without ssh; the others
# over ssh (passwordless, ssh -o BatchMode=yes HOST must work), with the same path to `ray`
# (the same virtualenv at the same path) on every host.
#
# Afterwards: export RAY_ADDRESS=<head>:$RAY_PORT (printed) for ray status / ray.init(), and
# submit jobs with launch/ray_submit.sh <head> STAGE CONFIG (dashboard on port 8265).
# Token authentication: Ray enables it when a token exists (~/.ray/auth_token, RAY_AUTH_TOKEN or
# RAY_AUTH_TOKEN_PATH) and RAY_AUTH_MODE is unset. Every node and every client then needs the
# same token, and clients need RAY_AUTH_MODE=token: start copies ~/.ray/auth_token to the
# remote hosts (RAY_COPY_TOKEN=0 to skip; a token given only as RAY_AUTH_TOKEN is not copied)
# and passes RAY_AUTH_MODE on. RAY_AUTH_MODE=disabled
# turns it off — only on a trusted network. Ray binds the machine's address (not loopback):
# connect with the printed address, not 127.0.0.1.
#
# environment:
#   RAY_PORT            GCS port (default 6379)
#   RAY_DASHBOARD_PORT  dashboard / job-submission port (default 8265)
#   RAY_DASHBOARD_HOST  interface the dashboard binds (default 0.0.0.0, so jobs can be
#                       submitted from other machines)
#   RAY_HEAD_IP         address the workers reach the head at (default: the first host, or this
#                       machine's address when the first host is a loopback name)
#   RAY_SLOTS_AS        gpus (default: slots -> --num-gpus) | cpus (slots -> --num-cpus, CPU-only)
#   RAY_START_ARGS      extra arguments for every `ray start` (e.g. --temp-dir, ports)
#   RAY_STOP_ARGS       extra arguments for `ray stop` (e.g. --force)
#   SSH_OPTS            extra ssh options (e.g. "-p 2222 -i ~/.ssh/cluster")
#   DRY_RUN=1           print the commands instead of running them
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  usage
  exit 0
fi
if (( $# != 2 )); then
  usage >&2
  exit 2
fi
action="$1" hostfile="$2"
case "$action" in start | stop | status) ;; *) die "unknown action '$action' (start, stop or status)" ;; esac
read_hostfile "$hostfile"
need_tool ray
RAY_BIN="$(command -v ray)"
port="${RAY_PORT:-6379}"
dash_port="${RAY_DASHBOARD_PORT:-8265}"
case "${RAY_SLOTS_AS:-gpus}" in
  gpus) slot_flag=--num-gpus ;;
  cpus) slot_flag=--num-cpus ;;
  *) die "RAY_SLOTS_AS must be gpus or cpus, got '$RAY_SLOTS_AS'" ;;
esac

head="${HOSTS[0]}"
if [[ -n "${RAY_HEAD_IP:-}" ]]; then
  head_ip="$RAY_HEAD_IP"
elif is_local_host "$head"; then
  head_ip="$(local_ip)"
else
  head_ip="$head"
fi

token_file="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
if [[ -z "${RAY_AUTH_MODE:-}" ]] && { [[ -n "${RAY_AUTH_TOKEN:-}" ]] || [[ -f "$token_file" ]]; }; then
  export RAY_AUTH_MODE=token  # what `ray start` would pick by itself; clients need it explicitly
fi

# on_host HOST CMD ARGS…: here for a local host, else over ssh (RAY_AUTH_MODE and the
# virtualenv's bin directory passed along).
on_host() {
  local host="$1"
  shift
  if is_local_host "$host"; then
    run "$@"
  else
    local remote
    remote="$(printf '%q ' "$@")"
    [[ -n "${RAY_AUTH_MODE:-}" ]] && remote="RAY_AUTH_MODE=$(printf '%q' "$RAY_AUTH_MODE") $remote"
    # the virtualenv first on PATH there too, so Ray jobs find rlhf-dist and its python
    remote="PATH=$(printf '%q' "$(dirname "$RAY_BIN")"):\"\$PATH\" $remote"
    # shellcheck disable=SC2086  # SSH_OPTS is a list of words on purpose
    run ssh -o BatchMode=yes ${SSH_OPTS:-} "$host" "$remote"
  fi
}

copy_token() {  # copy_token HOST: the auth token file into the host's ~/.ray (via stdin, not argv)
  local host="$1"
  is_local_host "$host" && return 0
  [[ "${RAY_AUTH_MODE:-}" == token && -f "$token_file" && "${RAY_COPY_TOKEN:-1}" == 1 ]] || return 0
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    echo "+ ssh $host 'mkdir -p ~/.ray && umask 077 && cat > ~/.ray/auth_token' < $token_file"
  else
    # shellcheck disable=SC2086
    ssh -o BatchMode=yes ${SSH_OPTS:-} "$host" \
      'mkdir -p ~/.ray && umask 077 && cat > ~/.ray/auth_token' <"$token_file"
  fi
}

case "$action" in
  start)
    # shellcheck disable=SC2086  # RAY_START_ARGS is a list of words on purpose
    on_host "$head" "$RAY_BIN" start --head --port "$port" "$slot_flag" "${SLOTS[0]}" \
      --dashboard-host "${RAY_DASHBOARD_HOST:-0.0.0.0}" --dashboard-port "$dash_port" \
      ${RAY_START_ARGS:-}
    for i in "${!HOSTS[@]}"; do
      (( i == 0 )) && continue
      copy_token "${HOSTS[$i]}"
      # shellcheck disable=SC2086
      on_host "${HOSTS[$i]}" "$RAY_BIN" start --address "$head_ip:$port" \
        "$slot_flag" "${SLOTS[$i]}" ${RAY_START_ARGS:-}
    done
    echo
    echo "Ray cluster: ${#HOSTS[@]} host(s), head $head_ip:$port"
    echo "  export RAY_ADDRESS=$head_ip:$port${RAY_AUTH_MODE:+ RAY_AUTH_MODE=$RAY_AUTH_MODE}"
    echo "  launch/ray_submit.sh $head_ip STAGE CONFIG [key=value ...]   # dashboard :$dash_port"
    echo "  launch/ray_cluster.sh stop $hostfile"
    ;;
  stop)
    for (( i = ${#HOSTS[@]} - 1; i >= 0; i-- )); do
      # shellcheck disable=SC2086
      on_host "${HOSTS[$i]}" "$RAY_BIN" stop ${RAY_STOP_ARGS:-}
    done
    ;;
  status)
    run "$RAY_BIN" status --address "$head_ip:$port"
    ;;
esac

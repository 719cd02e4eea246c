# launch/lib.sh — helpers sourced by the scripts in launch/ (not meant to be run directly).
#
# Provides: RLHF_REPO (the repository root), die, usage, check_args, need_tool, run (honours DRY_RUN=1: print the
# command instead of running it), read_hostfile (fills HOSTS/SLOTS from a DeepSpeed hostfile),
# is_local_host, local_ip.

RLHF_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# usage: print the comment block at the top of the calling script (after the shebang and any
# #SBATCH lines, up to the first line that is not a comment), without the leading "# ".
usage() {
  awk 'NR == 1 { next } /^#SBATCH/ { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

# check_args MIN "$@": usage and exit 0 on -h/--help; usage on stderr and exit 2 with fewer than
# MIN arguments.
check_args() {
  local min="$1"
  shift
  if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    usage
    exit 0
  fi
  if (( $# < min )); then
    usage >&2
    exit 2
  fi
}

# need_tool NAME: NAME on PATH, or in the repository's .venv/bin (then put first on PATH, so the
# launcher and the processes it starts use that virtualenv's python).
need_tool() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ -x "$RLHF_REPO/.venv/bin/$1" ]]; then
    export PATH="$RLHF_REPO/.venv/bin:$PATH"
    return 0
  fi
  die "'$1' not found on PATH: activate the virtualenv where rlhf_dist is installed (pip install -e .)"
}

# run CMD ARGS…: run it, or with DRY_RUN=1 print it (shell-quoted, prefixed by "+ ").
run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# read_hostfile FILE: DeepSpeed hostfile lines "host slots=N"; '#' starts a comment.
# Fills the arrays HOSTS and SLOTS (same order as the file); dies on a bad or duplicate line.
read_hostfile() {
  local file="$1" line n=0 h
  HOSTS=()
  SLOTS=()
  [[ -f "$file" ]] || die "hostfile '$file' does not exist"
  while IFS= read -r line || [[ -n "$line" ]]; do
    n=$((n + 1))
    line="${line%%#*}"
    [[ -z "${line//[[:space:]]/}" ]] && continue
    if [[ "$line" =~ ^[[:space:]]*([^[:space:]]+)[[:space:]]+slots=([0-9]+)[[:space:]]*$ ]]; then
      for h in "${HOSTS[@]}"; do
        [[ "$h" == "${BASH_REMATCH[1]}" ]] && die "$file:$n: host '$h' is listed twice"
      done
      (( BASH_REMATCH[2] > 0 )) || die "$file:$n: slots must be > 0"
      HOSTS+=("${BASH_REMATCH[1]}")
      SLOTS+=("${BASH_REMATCH[2]}")
    else
      die "$file:$n: expected 'host slots=N', got '$line'"
    fi
  done <"$file"
  (( ${#HOSTS[@]} > 0 )) || die "hostfile '$file' lists no host"
}

# is_local_host HOST: true for localhost, 127.0.0.1, ::1 and this machine's own names.
is_local_host() {
  case "$1" in
    localhost | 127.0.0.1 | ::1) return 0 ;;
  esac
  local me
  for me in "$(hostname)" "$(hostname -s 2>/dev/null || true)" "$(hostname -f 2>/dev/null || true)"; do
    [[ -n "$me" && "$1" == "$me" ]] && return 0
  done
  return 1
}

# local_ip: this machine's first address (what other hosts use to reach it).
local_ip() {
  local ip
  ip="$(hostname -I 2>/dev/null | awk '{print $1}')"
  echo "${ip:-127.0.0.1}"
}

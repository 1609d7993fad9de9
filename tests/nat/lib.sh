# Shared by the end-to-end tests in tests/nat (sourced, not run): paths, the run's namespaces and
# scratch directory, logging helpers, waits bounded by deadlines, and cleanup on every exit.
#
# Before sourcing, the test sets `test_name` (the prefix of its messages and scratch directory)
# and `ns_tag` (two letters that start its namespace prefix); its first argument, if any, is the
# burrow binary. After sourcing it calls `preconditions TOOL...`, which fails (never skips) when
# the test cannot run.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$repo/target}/debug/burrow}
testbed=${BURROW_TESTBED:-$here/../../../shared/testbed/nat.sh}

WAN=198.18.0.1
LAN=198.19.0.2

# A prefix unique to this run, short enough that nat.sh's interface names ("$p-w0") fit in 15.
p="$ns_tag$(($$ % 1000000))"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/burrow-$test_name.XXXXXX")
pids=()
passed=0
finished=""
nat_up=""
etc_dirs=()
etc_netns_made=""

# Logs must be plain text whatever the environment says.
export NO_COLOR=1 BURROW_LOG=info BURROW_LOG_FORMAT=human
unset RUST_LOG BURROW_TOKEN BURROW_STATE_DIR BURROW_KNOWN_HOSTS

say() { printf '%s: %s\n' "$test_name" "$*"; }
ok() {
  passed=$((passed + 1))
  say "ok: $*"
}

dump_logs() {
  local f
  for f in "$tmp"/*.out "$tmp"/*.err; do
    [[ -s $f ]] || continue
    printf -- '----- %s (last 40 lines) -----\n' "$(basename "$f")"
    tail -n 40 "$f"
    printf -- '-----\n'
  done
}

fail() {
  dump_logs
  say "FAIL: $*"
  say "$passed passed, 1 failed"
  finished=1
  exit 1
}

cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n $nat_up ]]; then nat down >/dev/null 2>&1 || true; fi
  for i in "${etc_dirs[@]}"; do rm -rf "$i"; done
  if [[ -n $etc_netns_made ]]; then rmdir /etc/netns 2>/dev/null || true; fi
  if [[ -z $finished && $rc -ne 0 ]]; then
    # An unexpected command failed under set -e: still say so plainly.
    dump_logs
    say "FAIL: aborted (exit $rc)"
    say "$passed passed, 1 failed"
  fi
  if [[ -n ${BURROW_NAT_KEEP:-} ]]; then say "logs kept in $tmp"; else rm -rf "$tmp"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

nat() { bash "$testbed" "$1" "$p"; }
# forget PID: the process has been reaped; cleanup must not signal its (reusable) id.
forget() {
  local keep=() pid
  for pid in "${pids[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
  pids=("${keep[@]}")
}

# netns_etc NS: create /etc/netns/NS (files there replace /etc's in `ip netns exec NS`), removed
# on exit.
netns_etc() {
  [[ ! -e /etc/netns/$1 ]] || fail "/etc/netns/$1 already exists"
  [[ -d /etc/netns ]] || etc_netns_made=1
  mkdir -p "/etc/netns/$1"
  etc_dirs+=("/etc/netns/$1")
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# count FILE ERE: how many lines of FILE match (0 when FILE does not exist yet).
count() {
  local n
  n=$(grep -cE -- "$2" "$1" 2>/dev/null) || true
  echo "${n:-0}"
}

# alive PID NAME: fail when the process has exited.
alive() {
  kill -0 "$1" 2>/dev/null || fail "$2 exited early"
}

# wait_lines FILE ERE N SECONDS WHAT PID NAME: poll until FILE has N matching lines.
wait_lines() {
  local file=$1 re=$2 n=$3 limit=$(($4 * 1000)) what=$5 pid=$6 name=$7 start
  start=$(now_ms)
  while (($(count "$file" "$re") < n)); do
    alive "$pid" "$name"
    (($(now_ms) - start < limit)) || fail "no $what within $4 s"
    sleep 0.1
  done
}

# stop PID NAME: SIGTERM must end the process with exit 0 within 15 s.
stop() {
  local pid=$1 name=$2 start rc=0
  kill -TERM "$pid"
  start=$(now_ms)
  while kill -0 "$pid" 2>/dev/null; do
    (($(now_ms) - start < 15000)) || fail "$name did not exit within 15 s of SIGTERM"
    sleep 0.1
  done
  wait "$pid" || rc=$?
  forget "$pid"
  ((rc == 0)) || fail "$name exited $rc after SIGTERM (expected 0)"
}

# wait_file FILE SECONDS PID NAME: poll until FILE exists and is not empty (a helper writes its
# port there once it listens).
wait_file() {
  local file=$1 limit=$(($2 * 1000)) pid=$3 name=$4 start
  start=$(now_ms)
  until [[ -s $file ]]; do
    alive "$pid" "$name"
    (($(now_ms) - start < limit)) || fail "$name not ready within $2 s (no $(basename "$file"))"
    sleep 0.05
  done
}

# preconditions TOOL...: fail unless root, every TOOL is on PATH, the binary and the testbed
# exist; then make the binary's path absolute.
preconditions() {
  local tool
  [[ $(id -u) -eq 0 ]] || fail "must run as root (network namespaces and iptables); try: sudo $0"
  for tool in "$@"; do
    command -v "$tool" >/dev/null || fail "$tool is missing (see .ci/run for the Debian packages)"
  done
  [[ -x $bin ]] || fail "no burrow binary at $bin (cargo build first, or pass its path)"
  [[ -f $testbed ]] || fail "no testbed at $testbed (set BURROW_TESTBED)"
  bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
  say "binary $bin, testbed $testbed, namespaces $p-{wan,rtr,lan}"
}

#!/usr/bin/env bash
# burrow's HTTP edge: `burrow server --http-listen` + `burrow http`, plain carrier, the tunnel
# answering on the custom hostname 127.0.0.1 (the Host the harness's wrk sends), logging at
# warn (the access log is off with it). HTTP cases only:
#   run.sh --groups http --adapter-dir bench/adapters --adapters direct,burrow,burrow-http,haproxy-http
# Same environment as burrow.sh (TUNNEL_BIN, BURROW_BENCH_LOG).
. "$BENCH_DIR/lib/adapter-lib.sh"

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) || bench_die "cannot resolve the repository root"
BURROW="${TUNNEL_BIN:-$repo_root/target/release/burrow}"
case "$BURROW" in /*) ;; *) BURROW="$PWD/$BURROW" ;; esac
TOKEN="bench-token-0123456789"

case "${1:-}" in
  start)
    [ -x "$BURROW" ] || bench_die "burrow binary not found at $BURROW (cargo build --release -p burrow, or set TUNNEL_BIN)"
    bench_port_free "$PUBLIC_PORT" || exit 1
    bench_port_free "$CTRL_PORT" || exit 1
    mkdir -p "$WORKDIR/state"
    export RUST_LOG="${BURROW_BENCH_LOG:-warn}" BURROW_LOG="${BURROW_BENCH_LOG:-warn}"
    bench_spawn server "$BURROW" server --listen "127.0.0.1:$CTRL_PORT" \
        --http-listen "$PUBLIC_HOST:$PUBLIC_PORT" --token "$TOKEN" --state-dir "$WORKDIR/state" \
        --insecure-plain
    bench_wait_port 127.0.0.1 "$CTRL_PORT" || exit 1
    bench_spawn client "$BURROW" http "$SERVICE_PORT" --local-host "$SERVICE_HOST" \
        --to "127.0.0.1:$CTRL_PORT" --hostname "$PUBLIC_HOST" --token "$TOKEN" \
        --known-hosts "$WORKDIR/known_servers" --insecure-plain
    bench_wait_port "$PUBLIC_HOST" "$PUBLIC_PORT" && bench_wait_forward ;;
  stop)    bench_stop_pids ;;
  version)
    v=$("$BURROW" --version 2>/dev/null | head -n 1) && [ -n "$v" ] || bench_die "cannot run $BURROW --version"
    echo "$v (HTTP edge, plain carrier)" ;;
  *) echo "usage: $0 start|stop|version" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# burrow's HTTP edge: `burrow server --http-listen` + `burrow http`, plain carrier, the tunnel
# answering on the custom hostnames 127.0.0.1 and bench (the Hosts the harness sends), logging at
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
    # An IP address as a hostname is for an identity the operator allowed it to, never for a
    # shared token: hence a [[clients]] entry.
    cat >"$WORKDIR/server.toml" <<TOML
listen = "127.0.0.1:$CTRL_PORT"
http_listen = "$PUBLIC_HOST:$PUBLIC_PORT"
insecure_plain = true
state_dir = "$WORKDIR/state"

[[clients]]
name = "bench"
token = "$TOKEN"
hostnames = ["$PUBLIC_HOST", "bench"]
TOML
    bench_spawn server "$BURROW" server --config "$WORKDIR/server.toml"
    bench_wait_port 127.0.0.1 "$CTRL_PORT" || exit 1
    bench_spawn client "$BURROW" http "$SERVICE_PORT" --local-host "$SERVICE_HOST" \
        --to "127.0.0.1:$CTRL_PORT" --name bench --hostname "$PUBLIC_HOST" --hostname bench \
        --token "$TOKEN" --known-hosts "$WORKDIR/known_servers" --insecure-plain
    bench_wait_port "$PUBLIC_HOST" "$PUBLIC_PORT" && bench_wait_forward ;;
  stop)    bench_stop_pids ;;
  version)
    v=$("$BURROW" --version 2>/dev/null | head -n 1) && [ -n "$v" ] || bench_die "cannot run $BURROW --version"
    echo "$v (HTTP edge, plain carrier)" ;;
  *) echo "usage: $0 start|stop|version" >&2; exit 2 ;;
esac

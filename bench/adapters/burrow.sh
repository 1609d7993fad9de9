#!/usr/bin/env bash
# burrow: `burrow server` + `burrow tcp`, one TCP tunnel, default settings (pool of
# pre-opened data connections), logging at warn.
#
# Adapter for the shared reverse-tunnel benchmark (../shared/bench, see its README):
#   burrow.sh start|stop|version
# BURROW_CARRIER picks the carrier:
#   plain (default)  --insecure-plain on both sides: plain TCP, the like-for-like peer of rathole/bore
#   tls              burrow's default carrier (TLS 1.3, self-signed identity generated in the
#                    state dir); the client pins the fingerprint the server prints on stdout
#                    (burrow-tls.sh sets this and execs this file)
#   mux              one TLS connection with every stream multiplexed over it (burrow-mux.sh)
#   mux-plain        the same over plain TCP, --insecure-plain on both sides (burrow-mux-plain.sh)
#   quic             one QUIC connection, a QUIC stream per visitor; the server also listens on
#                    UDP at the control port (burrow-quic.sh)
# TUNNEL_BIN: the burrow binary (default: <repo>/target/release/burrow).
# BURROW_BENCH_LOG: log filter for both sides (default warn, as the peers are run).
. "$BENCH_DIR/lib/adapter-lib.sh"

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) || bench_die "cannot resolve the repository root"
BURROW="${TUNNEL_BIN:-$repo_root/target/release/burrow}"
case "$BURROW" in /*) ;; *) BURROW="$PWD/$BURROW" ;; esac
CARRIER="${BURROW_CARRIER:-plain}"
TOKEN="bench-token-0123456789"

server_extra=()
client_extra=()
case "$CARRIER" in
    plain) carrier_flags=(--insecure-plain); carrier_desc="plain TCP carrier, --insecure-plain" ;;
    tls)   carrier_flags=(); carrier_desc="TLS 1.3 carrier, fingerprint pinned" ;;
    mux)   carrier_flags=(); client_extra=(--carrier mux)
           carrier_desc="mux carrier: one TLS 1.3 connection, yamux streams" ;;
    mux-plain) carrier_flags=(--insecure-plain); client_extra=(--carrier mux)
           carrier_desc="mux carrier over plain TCP (--insecure-plain), yamux streams" ;;
    quic)  carrier_flags=(); client_extra=(--carrier quic)
           carrier_desc="QUIC carrier: a QUIC stream per visitor" ;;
    *)     bench_die "BURROW_CARRIER must be plain, tls, mux, mux-plain or quic, not '$CARRIER'" ;;
esac

# wait_server_ready : wait for the server's `listening on` stdout line (its readiness marker,
# printed after the `fingerprint` line on TLS), failing early if the server died.
wait_server_ready() {
    local deadline=$(( $(date +%s%N) + READY_TIMEOUT * 1000000000 ))
    while [ "$(date +%s%N)" -lt "$deadline" ]; do
        grep -q '^listening on ' "$WORKDIR/server.log" 2>/dev/null && return 0
        bench_check_alive || return 1
        sleep 0.05
    done
    bench_log "timeout waiting for the server's 'listening on' line; see $WORKDIR/server.log"
    return 1
}

case "${1:-}" in
  start)
    [ -x "$BURROW" ] || bench_die "burrow binary not found at $BURROW (cargo build --release -p burrow, or set TUNNEL_BIN)"
    bench_port_free "$PUBLIC_PORT" || exit 1
    bench_port_free "$CTRL_PORT" || exit 1
    [ "$CARRIER" = quic ] && server_extra=(--quic-listen "127.0.0.1:$CTRL_PORT")
    mkdir -p "$WORKDIR/state"
    export RUST_LOG="${BURROW_BENCH_LOG:-warn}" BURROW_LOG="${BURROW_BENCH_LOG:-warn}"
    bench_spawn server "$BURROW" server --listen "127.0.0.1:$CTRL_PORT" \
        --ports "$PUBLIC_PORT-$PUBLIC_PORT" --token "$TOKEN" --state-dir "$WORKDIR/state" \
        "${carrier_flags[@]}" "${server_extra[@]}"
    wait_server_ready || exit 1
    client_trust=("${carrier_flags[@]}")
    if [ "${#carrier_flags[@]}" -eq 0 ]; then
        fp=$(sed -n 's/^fingerprint \(sha256:[0-9a-f]\{64\}\)$/\1/p' "$WORKDIR/server.log" | head -n 1)
        [ -n "$fp" ] || bench_die "no 'fingerprint sha256:...' line in $WORKDIR/server.log"
        client_trust=(--server-fingerprint "$fp")
    fi
    bench_spawn client "$BURROW" tcp "$SERVICE_PORT" --local-host "$SERVICE_HOST" \
        --to "127.0.0.1:$CTRL_PORT" --remote-port "$PUBLIC_PORT" --token "$TOKEN" \
        --known-hosts "$WORKDIR/known_servers" "${client_trust[@]}" "${client_extra[@]}"
    bench_wait_port "$PUBLIC_HOST" "$PUBLIC_PORT" && bench_wait_forward ;;
  stop)    bench_stop_pids ;;
  version)
    v=$("$BURROW" --version 2>/dev/null | head -n 1) && [ -n "$v" ] || bench_die "cannot run $BURROW --version"
    echo "$v ($carrier_desc)" ;;
  *) echo "usage: $0 start|stop|version" >&2; exit 2 ;;
esac

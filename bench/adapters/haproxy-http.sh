#!/usr/bin/env bash
# haproxy in HTTP mode: parses every request and response (keep-alive both sides), the
# reference for what an HTTP-aware hop costs. HTTP cases only (see burrow-http.sh).
. "$BENCH_DIR/lib/adapter-lib.sh"
HAPROXY=$(bench_find_bin "${HAPROXY_BIN:-}" haproxy) || bench_die "haproxy not found"
case "${1:-}" in
  start)
    bench_port_free "$PUBLIC_PORT" || exit 1
    maxconn=$(( ($(ulimit -n) - 200) / 2 )); [ "$maxconn" -gt 100000 ] && maxconn=100000
    cat >"$WORKDIR/haproxy.cfg" <<CFG
global
    maxconn $maxconn
    nbthread ${HAPROXY_THREADS:-2}
defaults
    mode http
    option http-keep-alive
    option forwardfor
    maxconn $maxconn
    timeout connect 5s
    timeout client 300s
    timeout server 300s
listen bench
    bind $PUBLIC_HOST:$PUBLIC_PORT
    server svc $SERVICE_HOST:$SERVICE_PORT
CFG
    bench_spawn relay "$HAPROXY" -db -f "$WORKDIR/haproxy.cfg"
    bench_wait_port "$PUBLIC_HOST" "$PUBLIC_PORT" && bench_wait_forward ;;
  stop)    bench_stop_pids ;;
  version) "$HAPROXY" -v 2>/dev/null | sed -n '1s/^HAProxy version \([^ ]*\).*/haproxy \1 (mode http)/p' ;;
  *) echo "usage: $0 start|stop|version" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# System calls per keep-alive HTTP request in each burrow process (plain carrier).
#
# Serves a 1 KiB file with nginx, runs `burrow server` and `burrow tcp` like the harness's
# adapter, warms up with `wrk -t2 -c64 -d2s`, then attaches `strace -c -f` to both processes for
# a 5 s `wrk -t2 -c64` run and prints calls per request for each (counts only: strace slows the
# processes, so its times mean nothing).
#
#   bench/keepalive_syscalls.sh [path/to/burrow]      (default target/release/burrow)
#
# Needs nginx, wrk, strace and curl; everything listens on 127.0.0.1 and goes with the script.
set -euo pipefail

BURROW=${1:-target/release/burrow}
[ -x "$BURROW" ] || { echo "no burrow binary at $BURROW" >&2; exit 2; }
for tool in nginx wrk strace curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 2; }
done
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$dir/nginx.pid" ] && nginx -c "$dir/nginx.conf" -s stop 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
web=$(free_port) ctrl=$(free_port) public=$(free_port)

mkdir -p "$dir/www"
head -c 1024 /dev/zero | tr '\0' x > "$dir/www/f"
# nginx's workers run as another user: they must read the file.
chmod 755 "$dir" "$dir/www" && chmod 644 "$dir/www/f"
cat > "$dir/nginx.conf" <<CONF
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/nginx.log;
events { worker_connections 1024; }
http {
    access_log off;
    server { listen 127.0.0.1:$web; root $dir/www; keepalive_requests 1000000; }
}
CONF
nginx -c "$dir/nginx.conf"

export BURROW_LOG=warn
token=bench-token-0123456789
"$BURROW" server --listen "127.0.0.1:$ctrl" --ports "$public-$public" --token "$token" \
    --state-dir "$dir/state" --insecure-plain > "$dir/server.log" 2>&1 &
server=$!; pids+=("$server")
for _ in $(seq 200); do grep -q '^listening on' "$dir/server.log" && break; sleep 0.05; done
"$BURROW" tcp "$web" --local-host 127.0.0.1 --to "127.0.0.1:$ctrl" --remote-port "$public" \
    --token "$token" --known-hosts "$dir/known_servers" --insecure-plain > "$dir/client.log" 2>&1 &
client=$!; pids+=("$client")
url="http://127.0.0.1:$public/f"
for _ in $(seq 200); do curl -fs -o /dev/null "$url" && break; sleep 0.05; done
curl -fs -o /dev/null "$url" || { echo "the tunnel did not come up; see $dir" >&2; exit 1; }

wrk -t2 -c64 -d2s "$url" > /dev/null
strace -c -f -o "$dir/server.strace" -p "$server" 2>/dev/null & tracers=($!)
strace -c -f -o "$dir/client.strace" -p "$client" 2>/dev/null & tracers+=($!)
sleep 1
wrk -t2 -c64 -d5s "$url" > "$dir/wrk.txt"
kill -INT "${tracers[@]}"
wait "${tracers[@]}" 2>/dev/null || true
requests=$(awk '/requests in/ {print $1}' "$dir/wrk.txt")
echo "requests: $requests"
for role in server client; do
    echo "$role (calls per request):"
    awk -v n="$requests" 'NR > 2 && $1 ~ /^[0-9.]+$/ && $NF != "total" {
        printf "  %-14s %.2f\n", $NF, $4 / n }' "$dir/$role.strace" |
        sort -k2 -nr | head -8
done

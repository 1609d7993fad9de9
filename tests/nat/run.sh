#!/usr/bin/env bash
# End-to-end test of the real burrow binary with its client behind a real NAT.
#
#   tests/nat/run.sh [path/to/burrow]      (default: target/debug/burrow; needs root)
#
# The NAT comes from ../shared/testbed/nat.sh (override with BURROW_TESTBED): the server and the
# visitors live in the wan namespace, the client and its target in the lan namespace, and wan
# cannot reach lan. The client finds the server by name (SERVER_NAME, from the lan namespace's own
# /etc/hosts), so the binary's name resolution is part of the test (a statically linked build
# resolves with its built-in copy of glibc's). The test publishes an echo service through a TLS
# tunnel, checks that visitors reach it, then forwards UDP events both ways (a broadcast heard on
# the lan reaches a listener in wan through a server-side sink; a datagram sent to a public port in
# wan is broadcast on the lan),
# cuts the link silently (no FIN, no RST), expects both sides to declare the carrier lost
# within 10 s, checks that another identity cannot take the leased port meanwhile, mends the link
# after 20 s, and expects the client to come back on the same public port. Finally the token must
# appear in no output, and SIGTERM must stop client and server with exit 0.
#
# It fails (never skips) when it cannot run: not root, iptables or python3 missing, no binary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
test_name=nat ns_tag=bn
# shellcheck source=tests/nat/lib.sh
. "$here/lib.sh"

PORTS=30000-30010
LAN_BROADCAST=198.19.0.255   # nat.sh gives lan 198.19.0.2/24
EVENTS_PORT=47010            # where the to-sink client listens in lan (broadcasts are sent here)
ONE_WAY_PORT=30010           # the public UDP port of the one-way tunnel toward the lan broadcast
FIRST_TRIES=40               # events resent until the first one arrives (0.5 s per try)
TOKEN="nat-test-token-$RANDOM$RANDOM"
SERVER_NAME=burrow-server.test   # wan's address in the lan namespace's /etc/hosts
DEAD_AFTER_S=6      # the server's --dead-after; the client uses its default (7 s)
DETECT_LIMIT_S=10   # both sides must notice a dead carrier this soon after the cut
CUT_S=20            # how long the link stays cut
RECONNECT_S=40      # how long the client may take to come back after the mend (backoff)

# ---- preconditions: a test that cannot run fails -------------------------------------------------
preconditions ip iptables python3 timeout

# ---- helpers run inside the namespaces ------------------------------------------------------------
cat >"$tmp/echo.py" <<'EOF'
# A TCP echo service: binds port 0, writes the port to a file once listening, echoes until EOF.
import asyncio, os, sys

async def handle(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(handle, sys.argv[1], 0)
    port = server.sockets[0].getsockname()[1]
    with open(sys.argv[2] + ".tmp", "w") as f:
        f.write(f"{port}\n")
    os.rename(sys.argv[2] + ".tmp", sys.argv[2])
    await server.serve_forever()

asyncio.run(main())
EOF

cat >"$tmp/visitor.py" <<'EOF'
# A visitor: one line must come back at once, then 512 KiB sent with a half-close must come back
# whole, followed by EOF (the tunnel carries half-close both ways).
import os, socket, sys, threading

host, port, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
line = f"hello through burrow {tag}\n".encode()
bulk = os.urandom(512 * 1024)
with socket.create_connection((host, port), timeout=10) as s:
    s.sendall(line)
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    if got != line:
        sys.exit(f"visitor: sent {line!r}, got {got!r}")

    def send():
        s.sendall(bulk)
        s.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    back = bytearray()
    while chunk := s.recv(65536):
        back += chunk
    sender.join()
    if bytes(back) != bulk:
        sys.exit(f"visitor: bulk echo differs: sent {len(bulk)} bytes, got {len(back)}")
print(f"visitor: line and {len(bulk)} bytes echoed, EOF seen")
EOF

cat >"$tmp/unreachable.py" <<'EOF'
# Exits 0 when host:port cannot be reached within a second.
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()
except OSError:
    sys.exit(0)
sys.exit(1)
EOF

cat >"$tmp/udp_listen.py" <<'EOF'
# A UDP listener: binds ADDR:0 with SO_BROADCAST, writes its port to PORTFILE once bound, then
# appends each datagram it hears to OUT as one line.
import os, socket, sys

addr, portfile, out = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.bind((addr, 0))
with open(portfile + ".tmp", "w") as f:
    f.write(f"{s.getsockname()[1]}\n")
os.rename(portfile + ".tmp", portfile)
with open(out, "a") as f:
    while True:
        data, _ = s.recvfrom(65535)
        f.write(data.decode(errors="replace") + "\n")
        f.flush()
EOF

cat >"$tmp/udp_send.py" <<'EOF'
# Sends one datagram PAYLOAD to HOST:PORT with SO_BROADCAST set (HOST may be a broadcast address).
import socket, sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
EOF

# udp_listener NS ADDR NAME: starts udp_listen.py in namespace NS; sets listener_port.
udp_listener() {
  local ns=$1 addr=$2 name=$3 pid start
  ip netns exec "$p-$ns" python3 "$tmp/udp_listen.py" "$addr" "$tmp/$name.port" "$tmp/$name.heard" \
    >"$tmp/$name.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  start=$(now_ms)
  until [[ -s $tmp/$name.port ]]; do
    alive "$pid" "$name"
    (($(now_ms) - start < 10000)) || fail "$name not listening within 10 s"
    sleep 0.05
  done
  listener_port=$(<"$tmp/$name.port")
}

# event NS HOST PORT HEARD PAYLOAD TRIES WHAT: sends PAYLOAD from namespace NS to HOST:PORT until
# the listener's file HEARD has it as a line, at most TRIES times, half a second apart.
event() {
  local ns=$1 host=$2 port=$3 heard=$4 payload=$5 tries=$6 what=$7 i j
  for ((i = 0; i < tries; i++)); do
    ip netns exec "$p-$ns" python3 "$tmp/udp_send.py" "$host" "$port" "$payload" ||
      fail "cannot send $what to $host:$port from $ns"
    for ((j = 0; j < 5; j++)); do
      grep -qxF -- "$payload" "$heard" 2>/dev/null && return 0
      sleep 0.1
    done
  done
  fail "$what '$payload' sent to $host:$port ($ns) never arrived after $tries tries"
}

visit() { # visit TAG: a visitor in wan uses the tunnel's public port
  ip netns exec "$p-wan" timeout 30 python3 "$tmp/visitor.py" "$WAN" "$public" "$1" \
    >"$tmp/visitor-$1.out" 2>&1 || fail "visitor ($1) through $WAN:$public: $(tail -n 3 "$tmp/visitor-$1.out")"
  ok "visitor ($1): $(tail -n 1 "$tmp/visitor-$1.out")"
}

# ---- the NAT ------------------------------------------------------------------------------------
nat_up=1
nat up >"$tmp/nat.out" 2>&1 || fail "nat.sh up: $(tail -n 3 "$tmp/nat.out")"
nat check >>"$tmp/nat.out" 2>&1 || fail "nat.sh check: $(tail -n 3 "$tmp/nat.out")"
ok "NAT up: lan reaches wan, wan cannot reach lan"
# `ip netns exec` mounts /etc/netns/NS/hosts over /etc/hosts; cleanup removes the directory.
netns_etc "$p-lan"
printf '127.0.0.1 localhost\n%s %s\n' "$WAN" "$SERVER_NAME" >"/etc/netns/$p-lan/hosts"

# ---- the target, in lan -------------------------------------------------------------------------
ip netns exec "$p-lan" python3 "$tmp/echo.py" "$LAN" "$tmp/echo.port" >"$tmp/echo.out" 2>"$tmp/echo.err" &
echo_pid=$!
pids+=("$echo_pid")
start=$(now_ms)
until [[ -s $tmp/echo.port ]]; do
  alive "$echo_pid" "echo service"
  (($(now_ms) - start < 10000)) || fail "echo service not listening within 10 s"
  sleep 0.05
done
echo_port=$(<"$tmp/echo.port")
say "echo service at $LAN:$echo_port (lan)"

# ---- the UDP sink's listener, in wan ------------------------------------------------------------
udp_listener wan "$WAN" sink
sink_port=$listener_port
say "UDP sink listener at $WAN:$sink_port (wan)"

# ---- the server, in wan -------------------------------------------------------------------------
ip netns exec "$p-wan" "$bin" server --listen "$WAN:0" --ports "$PORTS" --token "$TOKEN" \
  --state-dir "$tmp/state" --dead-after "${DEAD_AFTER_S}s" --heartbeat-interval 2s \
  --udp-sink "lanevents=$WAN:$sink_port" \
  >"$tmp/server.out" 2>"$tmp/server.err" &
server_pid=$!
pids+=("$server_pid")
wait_lines "$tmp/server.out" '^listening on ' 1 20 "'listening on' line from the server" "$server_pid" server
ctrl_port=$(sed -nE 's/^listening on .*:([0-9]+)$/\1/p' "$tmp/server.out" | head -n 1)
fp=$(sed -nE 's/^fingerprint (sha256:[0-9a-f]{64})$/\1/p' "$tmp/server.out" | head -n 1)
[[ -n $ctrl_port ]] || fail "cannot read the control port from: $(head -n 2 "$tmp/server.out")"
[[ -n $fp ]] || fail "no 'fingerprint sha256:<64 hex>' line before 'listening on'"
ok "server listening on $WAN:$ctrl_port, $fp"

# ---- the client, in lan -------------------------------------------------------------------------
ip netns exec "$p-lan" "$bin" tcp "$echo_port" --local-host "$LAN" --to "$SERVER_NAME:$ctrl_port" \
  --token "$TOKEN" --server-fingerprint "$fp" --known-hosts "$tmp/kh" \
  >"$tmp/client.out" 2>"$tmp/client.err" &
client_pid=$!
pids+=("$client_pid")
ready_re='^tunnel [^ ]+ ready at [^ ]+:[0-9]+ -> '
wait_lines "$tmp/client.out" "$ready_re" 1 20 "'tunnel ... ready at' line from the client" "$client_pid" client
ready=$(grep -E "$ready_re" "$tmp/client.out" | head -n 1)
public=$(sed -nE 's/^tunnel [^ ]+ ready at [^ ]+:([0-9]+) -> .*/\1/p' <<<"$ready")
((public >= 30000 && public <= 30010)) || fail "public port $public is outside --ports $PORTS"
[[ $ready == "tunnel tcp-$echo_port ready at $SERVER_NAME:$public -> $LAN:$echo_port" ]] ||
  fail "unexpected ready line: $ready"
ok "client: $ready"

visit first

ip netns exec "$p-wan" timeout 5 python3 "$tmp/unreachable.py" "$LAN" "$echo_port" ||
  fail "wan reached the target at $LAN:$echo_port directly: this is no NAT"
ok "the target is not reachable from wan except through the tunnel"

# ---- UDP events, lan -> wan: a broadcast heard by the client reaches the server's sink ----------
trust=(--to "$WAN:$ctrl_port" --token "$TOKEN" --server-fingerprint "$fp" --known-hosts "$tmp/kh")
ip netns exec "$p-lan" "$bin" udp "$EVENTS_PORT" --to-sink lanevents --local-host 0.0.0.0 "${trust[@]}" \
  >"$tmp/events.out" 2>"$tmp/events.err" &
events_pid=$!
pids+=("$events_pid")
sink_re='^tunnel lanevents ready: '
wait_lines "$tmp/events.out" "$sink_re" 1 20 "'tunnel lanevents ready:' line from the events client" "$events_pid" "events client"
sink_ready=$(grep -E "$sink_re" "$tmp/events.out" | head -n 1)
[[ $sink_ready == "tunnel lanevents ready: 0.0.0.0:$EVENTS_PORT -> sink lanevents on $WAN" ]] ||
  fail "unexpected ready line: $sink_ready"
ok "events client: $sink_ready"
# The client listens once the server has opened its event connection: the first broadcast that
# arrives is the readiness signal.
event lan "$LAN_BROADCAST" "$EVENTS_PORT" "$tmp/sink.heard" "lan broadcast 0 $RANDOM" "$FIRST_TRIES" "broadcast"
for i in 1 2 3; do
  event lan "$LAN_BROADCAST" "$EVENTS_PORT" "$tmp/sink.heard" "lan broadcast $i $RANDOM" 5 "broadcast"
done
ok "broadcasts to $LAN_BROADCAST:$EVENTS_PORT on the lan reached the sink listener at $WAN:$sink_port"

# ---- UDP events, wan -> lan: a datagram sent to a public port is broadcast on the lan -----------
udp_listener lan 0.0.0.0 lanlistener
lan_port=$listener_port
ip netns exec "$p-lan" "$bin" udp "$lan_port" --one-way --local-host "$LAN_BROADCAST" \
  --remote-port "$ONE_WAY_PORT" "${trust[@]}" >"$tmp/oneway.out" 2>"$tmp/oneway.err" &
oneway_pid=$!
pids+=("$oneway_pid")
wait_lines "$tmp/oneway.out" "$ready_re" 1 20 "'tunnel ... ready at' line from the one-way client" "$oneway_pid" "one-way client"
oneway_ready=$(grep -E "$ready_re" "$tmp/oneway.out" | head -n 1)
[[ $oneway_ready == "tunnel udp-$lan_port ready at $WAN:$ONE_WAY_PORT -> $LAN_BROADCAST:$lan_port" ]] ||
  fail "unexpected ready line: $oneway_ready"
ok "one-way client: $oneway_ready"
event wan "$WAN" "$ONE_WAY_PORT" "$tmp/lanlistener.heard" "wan event 0 $RANDOM" "$FIRST_TRIES" "event"
for i in 1 2 3; do
  event wan "$WAN" "$ONE_WAY_PORT" "$tmp/lanlistener.heard" "wan event $i $RANDOM" 5 "event"
done
ok "events sent to $WAN:$ONE_WAY_PORT were broadcast to $LAN_BROADCAST:$lan_port and heard on the lan"

stop "$events_pid" "events client"
stop "$oneway_pid" "one-way client"
ok "the UDP event clients exit 0 on SIGTERM"

# ---- cut the link: both sides must notice within the liveness deadline ---------------------------
server_lost0=$(count "$tmp/server.err" 'carrier lost')
client_lost0=$(count "$tmp/client.err" 'carrier lost')
nat cut
t_cut=$(now_ms)
say "link cut; waiting for 'carrier lost' on both sides"
server_ms="" client_ms=""
while [[ -z $server_ms || -z $client_ms ]]; do
  elapsed=$(($(now_ms) - t_cut))
  if [[ -z $server_ms ]] && (($(count "$tmp/server.err" 'carrier lost') > server_lost0)); then
    server_ms=$elapsed
  fi
  if [[ -z $client_ms ]] && (($(count "$tmp/client.err" 'carrier lost') > client_lost0)); then
    client_ms=$elapsed
  fi
  alive "$server_pid" server
  alive "$client_pid" client
  ((elapsed < 15000)) || fail "'carrier lost' not logged within 15 s (server: ${server_ms:-never} ms, client: ${client_ms:-never} ms)"
  sleep 0.1
done
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }
say "carrier lost: server after $(secs "$server_ms") s, client after $(secs "$client_ms") s"
((server_ms <= DETECT_LIMIT_S * 1000)) || fail "the server took $(secs "$server_ms") s (> ${DETECT_LIMIT_S} s) to notice"
((client_ms <= DETECT_LIMIT_S * 1000)) || fail "the client took $(secs "$client_ms") s (> ${DETECT_LIMIT_S} s) to notice"
ok "both sides declared the carrier lost within ${DETECT_LIMIT_S} s"

# While the lease holds the port, another identity (a client on the wan side, which the cut does
# not affect) must be given a different one.
ip netns exec "$p-wan" "$bin" tcp 9 --to "$WAN:$ctrl_port" --name rival --token "$TOKEN" \
  --server-fingerprint "$fp" --known-hosts "$tmp/kh-rival" \
  >"$tmp/rival.out" 2>"$tmp/rival.err" &
rival_pid=$!
pids+=("$rival_pid")
wait_lines "$tmp/rival.out" "$ready_re" 1 15 "'tunnel ... ready at' line from the rival client" "$rival_pid" "rival client"
rival_port=$(sed -nE 's/^tunnel [^ ]+ ready at [^ ]+:([0-9]+) -> .*/\1/p' "$tmp/rival.out" | head -n 1)
((rival_port != public)) || fail "another identity was given leased port $public during the outage"
stop "$rival_pid" "rival client"
ok "leased port $public was kept from another identity (which got $rival_port)"

# The outage lasts CUT_S in all, long enough for the client to retry into the dead link.
rest=$((CUT_S * 1000 - ($(now_ms) - t_cut)))
((rest <= 0)) || sleep "$(secs "$rest")"
nat mend
say "link mended after $(secs "$(($(now_ms) - t_cut))") s"

# ---- reconnect: same public port, tunnel works again ---------------------------------------------
t_mend=$(now_ms)
wait_lines "$tmp/client.out" "$ready_re" 2 "$RECONNECT_S" "second 'tunnel ... ready at' line after the mend" "$client_pid" client
ready2=$(grep -E "$ready_re" "$tmp/client.out" | sed -n 2p)
say "client back $(secs "$(($(now_ms) - t_mend))") s after the mend: $ready2"
[[ $ready2 == "$ready" ]] || fail "the tunnel came back as '$ready2', expected '$ready' (same public port)"
ok "the tunnel kept public port $public across the reconnect"

visit again
alive "$server_pid" server

# ---- the token is a secret: never printed or logged ---------------------------------------------
if grep -qF -- "$TOKEN" "$tmp"/{server,client,rival,events,oneway}.{out,err}; then
  fail "the token appears in burrow's output"
fi
ok "the token appears in no output"

# ---- clean shutdown: SIGTERM ends both with exit 0 ----------------------------------------------
stop "$client_pid" client
stop "$server_pid" server
ok "client and server exit 0 on SIGTERM"

finished=1
say "PASS: tunnel through NAT, UDP events both ways, carrier loss seen by server in $(secs "$server_ms") s and client in $(secs "$client_ms") s, same port $public after reconnect"
say "$passed passed, 0 failed"

#!/usr/bin/env bash
# End-to-end test of QUIC connection migration: the client's NAT mapping changes in the middle
# of a transfer, and its session and open streams carry on.
#
#   tests/nat/quic.sh [path/to/burrow]     (default: target/debug/burrow; needs root)
#
# The NAT comes from ../shared/testbed/nat.sh (override with BURROW_TESTBED), as in run.sh: the
# server in wan listens for QUIC on its control port number, the client in lan dials it with
# --carrier quic and publishes a bulk target in lan. Two visitors in wan move 100 MiB each through
# the public port, one downloading and one uploading, at a bounded pace so that the transfers
# last several seconds, and compare the SHA-256 of what arrived with the expected one. Once both
# have moved REMAP_AT_MIB, the router's UDP mapping is changed under the client: a rule that
# masquerades UDP to NEW_PORTS goes in before the testbed's MASQUERADE, and every UDP conntrack
# entry is deleted, so the client's next packet leaves from a new public port.
#
# Checks: before the remap the mapping's public port is outside NEW_PORTS (the control, so the
# last check can fail); both transfers complete intact; the client logged one "session
# established" and no reconnect, the server one session and no lost carrier; and afterwards the
# router's only UDP flow from the client maps to a port in NEW_PORTS and carried the rest of both
# transfers (conntrack byte counters, each way at least half of what was left at the remap).
#
# It fails (never skips) when it cannot run: not root, iptables, conntrack or python3 missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
test_name=nat-quic ns_tag=bq
# shellcheck source=tests/nat/lib.sh
. "$here/lib.sh"

# A fixed port is safe: the wan namespace is this run's alone. QUIC and TCP share its number.
CTRL_PORT=7000
PORTS=30000-30010
NEW_PORTS=20000-20999   # below Linux's ephemeral range, where the first mapping's port comes from
TOKEN="nat-quic-token-$RANDOM$RANDOM"
MIB=100                 # each way
RATE_MIB_S=20           # visitors move at most this much per second: 5 s per transfer
REMAP_AT_MIB=20         # about a second into both transfers
TRANSFER_LIMIT_S=60     # each visitor must be done this soon (a stall fails, it does not hang)

preconditions ip iptables conntrack python3 timeout
cp "$here/bulk.py" "$tmp/bulk.py"

# in_range PORT LOW-HIGH: true when PORT lies in the range.
in_range() { (($1 >= ${2%-*} && $1 <= ${2#*-})); }

# mapping: the router's UDP conntrack entries for the client's QUIC flow, one per line as
# "PUBLIC_PORT ORIG_BYTES REPLY_BYTES" (client->server bytes, then server->client).
mapping() {
  ip netns exec "$p-rtr" conntrack -L -p udp --orig-src "$LAN" --orig-port-dst "$CTRL_PORT" 2>/dev/null |
    awk '{ n = 0; for (i = 1; i <= NF; i++) {
             if ($i ~ /^dport=/) { split($i, kv, "="); port = kv[2] }
             if ($i ~ /^bytes=/) { split($i, kv, "="); bytes[++n] = kv[2] } }
           print port, bytes[1] + 0, bytes[2] + 0 }'
}

# progress NAME: bytes the visitor NAME has moved so far (0 before it starts).
progress() { cat "$tmp/$1.progress" 2>/dev/null || echo 0; }

# ---- the NAT, counting bytes per flow -----------------------------------------------------------
nat_up=1
nat up >"$tmp/nat.out" 2>&1 || fail "nat.sh up: $(tail -n 3 "$tmp/nat.out")"
nat check >>"$tmp/nat.out" 2>&1 || fail "nat.sh check: $(tail -n 3 "$tmp/nat.out")"
ip netns exec "$p-rtr" sysctl -qw net.netfilter.nf_conntrack_acct=1 ||
  fail "cannot turn on conntrack accounting in $p-rtr"
read -r eph_low eph_high < <(ip netns exec "$p-lan" sysctl -n net.ipv4.ip_local_port_range)
if ((eph_low <= ${NEW_PORTS#*-} && eph_high >= ${NEW_PORTS%-*})); then
  fail "lan's ephemeral ports $eph_low-$eph_high overlap $NEW_PORTS: the control check would be void"
fi
ok "NAT up: lan reaches wan, wan cannot reach lan"

# ---- the bulk target, in lan --------------------------------------------------------------------
ip netns exec "$p-lan" python3 "$tmp/bulk.py" serve "$LAN" "$tmp/target.port" \
  >"$tmp/target.out" 2>"$tmp/target.err" &
target_pid=$!
pids+=("$target_pid")
wait_file "$tmp/target.port" 10 "$target_pid" "bulk target"
target_port=$(<"$tmp/target.port")
say "bulk target at $LAN:$target_port (lan)"

# ---- the server, in wan: TCP and QUIC on the control port ---------------------------------------
ip netns exec "$p-wan" "$bin" server --listen "$WAN:$CTRL_PORT" --quic-listen "$WAN:$CTRL_PORT" \
  --ports "$PORTS" --token "$TOKEN" --state-dir "$tmp/state" \
  >"$tmp/server.out" 2>"$tmp/server.err" &
server_pid=$!
pids+=("$server_pid")
wait_lines "$tmp/server.out" "^quic listening on $WAN:$CTRL_PORT\$" 1 20 \
  "'quic listening on $WAN:$CTRL_PORT' line from the server" "$server_pid" server
fp=$(sed -nE 's/^fingerprint (sha256:[0-9a-f]{64})$/\1/p' "$tmp/server.out" | head -n 1)
[[ -n $fp ]] || fail "no 'fingerprint sha256:<64 hex>' line before 'quic listening on'"
ok "server listening on $WAN:$CTRL_PORT (TCP and QUIC), $fp"

# ---- the client, in lan, over QUIC --------------------------------------------------------------
ip netns exec "$p-lan" "$bin" tcp "$target_port" --local-host "$LAN" --to "$WAN:$CTRL_PORT" \
  --carrier quic --token "$TOKEN" --server-fingerprint "$fp" --known-hosts "$tmp/kh" \
  >"$tmp/client.out" 2>"$tmp/client.err" &
client_pid=$!
pids+=("$client_pid")
ready_re='^tunnel [^ ]+ ready at [^ ]+:[0-9]+ -> '
wait_lines "$tmp/client.out" "$ready_re" 1 20 "'tunnel ... ready at' line from the client" "$client_pid" client
ready=$(grep -E "$ready_re" "$tmp/client.out" | head -n 1)
public=$(sed -nE 's/^tunnel [^ ]+ ready at [^ ]+:([0-9]+) -> .*/\1/p' <<<"$ready")
[[ $ready == "tunnel tcp-$target_port ready at $WAN:$public -> $LAN:$target_port" ]] ||
  fail "unexpected ready line: $ready"
grep -qE 'session established.*carrier="?quic' "$tmp/client.err" ||
  fail "the client's 'session established' line does not name the quic carrier"
ok "client over QUIC: $ready"

# ---- the control: the first mapping is outside the new range ------------------------------------
before=$(mapping)
[[ $(wc -l <<<"$before") -eq 1 && -n $before ]] ||
  fail "expected one UDP conntrack entry for the client's QUIC flow in $p-rtr, got: '${before:-none}'"
old_port=${before%% *}
! in_range "$old_port" "$NEW_PORTS" ||
  fail "the first mapping's public port $old_port is already in $NEW_PORTS: the remap check would be void"
ok "control: the client's QUIC flow leaves the NAT from port $old_port, outside $NEW_PORTS"

# ---- two visitors in wan: 100 MiB down and 100 MiB up at a bounded pace -------------------------
declare -A visitor
for role in get put; do
  ip netns exec "$p-wan" timeout "$TRANSFER_LIMIT_S" python3 "$tmp/bulk.py" "$role" "$WAN" "$public" \
    "$MIB" "$RATE_MIB_S" "$tmp/$role.progress" >"$tmp/$role.out" 2>"$tmp/$role.err" &
  visitor[$role]=$!
  pids+=("$!")
done
start=$(now_ms)
remap_bytes=$((REMAP_AT_MIB << 20))
while (($(progress get) < remap_bytes || $(progress put) < remap_bytes)); do
  alive "${visitor[get]}" "downloading visitor"
  alive "${visitor[put]}" "uploading visitor"
  (($(now_ms) - start < TRANSFER_LIMIT_S * 1000)) ||
    fail "the visitors did not reach $REMAP_AT_MIB MiB within $TRANSFER_LIMIT_S s (get $(progress get), put $(progress put) bytes)"
  sleep 0.05
done

# ---- the remap: UDP leaves from a new port range, the old mapping is forgotten -------------------
ip netns exec "$p-rtr" iptables -t nat -I POSTROUTING 1 -o "$p-w1" -p udp -j MASQUERADE --to-ports "$NEW_PORTS"
ip netns exec "$p-rtr" conntrack -D -p udp >"$tmp/conntrack-delete.out" 2>&1 ||
  fail "conntrack -D -p udp: $(tail -n 1 "$tmp/conntrack-delete.out")"
got_at=$(progress get) put_at=$(progress put)
say "NAT remapped at get $((got_at >> 20)) MiB, put $((put_at >> 20)) MiB of $MIB"
((got_at < MIB << 20 && put_at < MIB << 20)) ||
  fail "a transfer ended before the remap (get $got_at, put $put_at bytes): nothing was tested"

for role in get put; do
  rc=0
  wait "${visitor[$role]}" || rc=$?
  forget "${visitor[$role]}"
  ((rc == 0)) || fail "visitor '$role' exited $rc: $(tail -n 2 "$tmp/$role.err" "$tmp/$role.out")"
  ok "$(tail -n 1 "$tmp/$role.out") across the remap"
done

# ---- the same session all along -----------------------------------------------------------------
alive "$server_pid" server
alive "$client_pid" client
client_sessions=$(count "$tmp/client.err" 'session established')
server_sessions=$(count "$tmp/server.err" 'session established')
((client_sessions == 1)) || fail "the client logged 'session established' $client_sessions times (expected 1)"
(($(count "$tmp/client.err" 'reconnect|carrier lost') == 0)) ||
  fail "the client lost its carrier: $(grep -E 'reconnect|carrier lost' "$tmp/client.err" | head -n 1)"
((server_sessions == 1)) || fail "the server logged 'session established' $server_sessions times (expected 1)"
(($(count "$tmp/server.err" 'carrier lost') == 0)) ||
  fail "the server lost the carrier: $(grep -E 'carrier lost' "$tmp/server.err" | head -n 1)"
ok "one session on both sides, no reconnect, no lost carrier"

# ---- the flow now leaves from the new range and carried the rest of both transfers ---------------
after=$(mapping)
[[ -n $after ]] || fail "no UDP conntrack entry for the client's QUIC flow after the remap"
# What the visitors had not moved at the remap had to cross the NAT after it, except what the
# buffers between the NAT and the downloading visitor already held (a QUIC stream window and two
# TCP socket buffers: about 10-15 MiB here); half of the rest is a floor with room to spare. The
# download crosses the NAT from client to server, the upload from server to client.
need_up=$((((MIB << 20) - got_at) / 2)) need_down=$((((MIB << 20) - put_at) / 2))
while read -r port up down; do
  in_range "$port" "$NEW_PORTS" ||
    fail "after the remap the client's flow still leaves from port $port, outside $NEW_PORTS"
  ((up >= need_up && down >= need_down)) ||
    fail "the new mapping (port $port) carried $up bytes client->server and $down server->client," \
      "expected at least $need_up and $need_down"
  ok "the client's QUIC flow now leaves from port $port (in $NEW_PORTS) and carried" \
    "$((up >> 20)) MiB client->server, $((down >> 20)) MiB server->client since the remap"
  new_port=$port
done <<<"$after"

# ---- the token is a secret: never printed or logged ---------------------------------------------
if grep -qF -- "$TOKEN" "$tmp"/{server,client}.{out,err}; then
  fail "the token appears in burrow's output"
fi

# ---- clean shutdown: SIGTERM ends both with exit 0 ----------------------------------------------
stop "$client_pid" client
stop "$server_pid" server
ok "client and server exit 0 on SIGTERM; the token appears in no output"

finished=1
say "PASS: QUIC session and streams kept across a NAT remap (port $old_port -> $new_port), $MIB MiB each way intact"
say "$passed passed, 0 failed"

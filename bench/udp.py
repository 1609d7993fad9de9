#!/usr/bin/env python3
"""UDP throughput and packet rate through the tunnel, measured with `iperf3 -u`.

Systems (each gets its own `iperf3 -s` service and its own public port, all started at once):

  direct          iperf3 straight to the service, no tunnel (the reference)
  burrow (plain)  burrow server --insecure-plain; `burrow tcp` + `burrow udp` clients
  burrow (TLS)    the same over burrow's default TLS 1.3 carrier, the server's fingerprint pinned
  rathole (udp)   rathole 0.5.0, tcp transport, one `udp` and one `tcp` service on the same port

iperf3 in UDP mode also opens a TCP control connection to the same port, so every tunnel carries
both protocols on the iperf3 port: burrow runs two clients (`burrow tcp P` for the control
connection, `burrow udp P` for the data; TCP and UDP ports are separate namespaces in burrow),
rathole declares two services on one port number.

Cases (each `iperf3 -c 127.0.0.1 -p PUBLIC -u -t DURATION --json` plus):

  100M/1400   -b 100M -l 1400
  1G/1400     -b 1G   -l 1400
  pps/64      -b 0    -l 64    (unlimited: as many 64-byte datagrams as the sender can write)
  max/1400    -b 0    -l 1400  (unlimited: the most each tunnel delivers, beyond a 1 Gbit/s offer)

The cases are measured system after system, ROUNDS times, with the system order rotated each
round (as the shared harness does), and the medians are reported. From iperf3's JSON it takes
the receiver's summary (`end.sum_received`): delivered bitrate, datagrams delivered per second
((packets - lost_packets) / seconds), lost_percent and jitter_ms. Around every measurement it also
records the CPU time of the tunnel processes (/proc/PID/stat), the whole machine's busy share
(/proc/stat), the kernel's UDP receive-buffer drops (RcvbufErrors in /proc/net/snmp; this is
machine-wide, so other users' UDP traffic would show up there) and the drops counted on the
tunnel's public UDP socket (/proc/net/udp), to tell where datagrams were lost.

  bench/udp.py [--burrow target/release/burrow] [--rathole PATH] [--rounds 3] [--duration 5]
               [--systems direct,burrow-plain,burrow-tls,rathole] [--cases 100M/1400,1G/1400,pps/64]
               [--out FILE.jsonl]

Everything listens on 127.0.0.1 only; every wait is bounded; every process started here is
stopped (by process group) on exit.
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TOKEN = "udp-bench-token-0123456789"
CASES = {
    "100M/1400": ("100M", 1400),
    "1G/1400": ("1G", 1400),
    "pps/64": ("0", 64),
    "max/1400": ("0", 1400),
}
SYSTEMS = ["direct", "burrow-plain", "burrow-tls", "rathole"]
LABEL = {"direct": "direct", "burrow-plain": "burrow (plain)", "burrow-tls": "burrow (TLS)",
         "rathole": "rathole (udp)"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both TCP and UDP")


class Procs:
    """Processes of one system, each in its own process group, stopped together."""

    def __init__(self, workdir):
        self.workdir, self.procs = workdir, {}

    def spawn(self, name, args, env_extra=None):
        log = open(os.path.join(self.workdir, name + ".log"), "w")
        env = dict(os.environ, RUST_LOG="warn", BURROW_LOG="warn")
        env.update(env_extra or {})
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs[name] = p
        return p

    def log(self, name):
        try:
            with open(os.path.join(self.workdir, name + ".log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def alive(self, name):
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def stop_one(self, name, timeout=5):
        p = self.procs.get(name)
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)

    def stop(self, order=()):
        for name in list(order) + [n for n in self.procs if n not in order]:
            self.stop_one(name)


def wait_for(cond, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def tcp_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- machine counters

def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def sys_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v), idle, v[7] if len(v) > 7 else 0


def udp_snmp():
    with open("/proc/net/snmp") as f:
        rows = [l.split() for l in f if l.startswith("Udp:")]
    return dict(zip(rows[0][1:], (int(x) for x in rows[1][1:])))


def udp_socket_drops(port):
    """{inode: drops} of the UDP sockets bound to 127.0.0.1:port."""
    out = {}
    want = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            p = line.split()
            if p[1] == want:
                out[p[9]] = int(p[12])
    return out


def drops_delta(before, after):
    return sum(d - before.get(inode, 0) for inode, d in after.items())


# ---------------------------------------------------------------- systems

class System:
    def __init__(self, key, args):
        self.key, self.args = key, args
        self.workdir = tempfile.mkdtemp(prefix=f"burrow-udp-{key}-")
        self.procs = Procs(self.workdir)
        self.service = free_port()
        self.public = self.service if key == "direct" else free_port()
        self.tunnel = []  # process names whose CPU is the tunnel's

    def start_service(self):
        self.procs.stop_one("iperf3-s")
        self.procs.spawn("iperf3-s", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(self.service), "--forceflush"])
        wait_for(lambda: "Server listening" in self.procs.log("iperf3-s") or not self.procs.alive("iperf3-s"),
                 f"{self.key}: iperf3 -s on {self.service}", 10)
        if not self.procs.alive("iperf3-s"):
            raise RuntimeError(f"iperf3 -s exited: {self.procs.log('iperf3-s')[-500:]}")

    def start(self):
        self.start_service()
        if self.key == "direct":
            return
        if self.key.startswith("burrow"):
            self.start_burrow(tls=self.key == "burrow-tls")
        elif self.key == "rathole":
            self.start_rathole()

    def start_burrow(self, tls):
        b, ctrl, p = self.args.burrow, free_port(), str(self.public)
        flags = [] if tls else ["--insecure-plain"]
        # Datagram relay counters (sent / dropped_full / dropped_flow) are logged at info when a
        # datagram connection goes down; those two modules log at info, everything else at warn.
        env = {"BURROW_LOG": "warn,burrow_server::udp=info,burrow_client::udp=info"}
        self.procs.spawn("server", [b, "server", "--listen", f"127.0.0.1:{ctrl}", "--ports", f"{p}-{p}",
                                    "--public-bind", "127.0.0.1", "--token", TOKEN,
                                    "--state-dir", os.path.join(self.workdir, "state")] + flags, env)
        wait_for(lambda: "listening on" in self.procs.log("server") or not self.procs.alive("server"),
                 "burrow server", 20)
        if not self.procs.alive("server"):
            raise RuntimeError(f"burrow server exited: {self.procs.log('server')[-2000:]}")
        if tls:
            fp = next(l.split()[1] for l in self.procs.log("server").splitlines() if l.startswith("fingerprint "))
            flags = ["--server-fingerprint", fp]
        common = ["--local-host", "127.0.0.1", "--to", f"127.0.0.1:{ctrl}", "--remote-port", p,
                  "--token", TOKEN, "--known-hosts", os.path.join(self.workdir, "known")] + flags
        self.procs.spawn("client-tcp", [b, "tcp", str(self.service)] + common)
        self.procs.spawn("client-udp", [b, "udp", str(self.service)] + common, env)
        for name, proto in (("client-tcp", "tcp"), ("client-udp", "udp")):
            wait_for(lambda n=name, pr=proto: f"tunnel {pr}-{self.service} ready" in self.procs.log(n)
                     or not self.procs.alive(n), f"burrow {proto} client", 20)
            if not self.procs.alive(name):
                raise RuntimeError(f"burrow {proto} client exited: {self.procs.log(name)[-2000:]}")
        self.tunnel = ["server", "client-tcp", "client-udp"]

    def start_rathole(self):
        ctrl, p, s = free_port(), self.public, self.service
        with open(os.path.join(self.workdir, "server.toml"), "w") as f:
            f.write(f'[server]\nbind_addr = "127.0.0.1:{ctrl}"\n[server.transport]\ntype = "tcp"\n'
                    f'[server.services.bench_tcp]\ntype = "tcp"\ntoken = "{TOKEN}"\nbind_addr = "127.0.0.1:{p}"\n'
                    f'[server.services.bench_udp]\ntype = "udp"\ntoken = "{TOKEN}"\nbind_addr = "127.0.0.1:{p}"\n')
        with open(os.path.join(self.workdir, "client.toml"), "w") as f:
            f.write(f'[client]\nremote_addr = "127.0.0.1:{ctrl}"\n[client.transport]\ntype = "tcp"\n'
                    f'[client.services.bench_tcp]\ntype = "tcp"\ntoken = "{TOKEN}"\nlocal_addr = "127.0.0.1:{s}"\n'
                    f'[client.services.bench_udp]\ntype = "udp"\ntoken = "{TOKEN}"\nlocal_addr = "127.0.0.1:{s}"\n')
        self.procs.spawn("server", [self.args.rathole, "--server", os.path.join(self.workdir, "server.toml")])
        wait_for(lambda: tcp_open(ctrl), "rathole server", 20)
        self.procs.spawn("client", [self.args.rathole, "--client", os.path.join(self.workdir, "client.toml")])
        wait_for(lambda: tcp_open(p), "rathole public port", 20)
        self.tunnel = ["server", "client"]

    def tunnel_pids(self):
        return {n: self.procs.procs[n].pid for n in self.tunnel}

    def dead(self):
        return [n for n in self.tunnel + ["iperf3-s"] if not self.procs.alive(n)]

    def stop(self):
        # Stop burrow's clients first: the server then sees the session end and logs its
        # datagram counters (it does not log them when it is itself shut down).
        self.procs.stop_one("client-tcp")
        self.procs.stop_one("client-udp")
        if self.key.startswith("burrow") and self.procs.alive("server"):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and "datagram connection down" not in self.procs.log("server"):
                time.sleep(0.1)
        self.procs.stop(order=["client", "server", "iperf3-s"])

    def burrow_counters(self):
        lines = []
        for name in ("server", "client-udp"):
            lines += [f"{name}: {l.strip()}" for l in self.procs.log(name).splitlines()
                      if "datagram connection down" in l]
        return lines


def iperf3(port, rate, length, duration):
    cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-u", "-b", rate, "-t", str(duration),
           "-l", str(length), "--json"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 20,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"iperf3 client timed out after {duration + 20} s"
    try:
        d = json.loads(r.stdout)
    except json.JSONDecodeError:
        return None, f"iperf3 rc={r.returncode}: {(r.stdout + r.stderr)[-300:]}"
    if "error" in d:
        return None, d["error"]
    rec = d.get("end", {}).get("sum_received")
    if not rec or not rec.get("seconds"):
        return None, "no end.sum_received in iperf3 JSON"
    snt = d["end"].get("sum_sent", {})
    delivered = rec["packets"] - rec["lost_packets"]
    sent = snt.get("packets", 0)
    return {
        "mbps": rec["bits_per_second"] / 1e6,
        "pps": delivered / rec["seconds"],
        "lost_pct": rec["lost_percent"],
        # iperf3 counts a datagram lost only below the highest sequence number received; what was
        # still inside the tunnel when the test ended is not in lost_percent. This counts it.
        "undelivered_pct": 100 * (1 - delivered / sent) if sent else None,
        "sent": sent,
        "lost": rec["lost_packets"],
        "packets": rec["packets"],
        "jitter_ms": rec["jitter_ms"],
        "sent_mbps": snt.get("bits_per_second", 0) / 1e6,
        "sent_pps": snt.get("packets", 0) / snt["seconds"] if snt.get("seconds") else 0,
    }, None


def measure(system, case, args):
    rate, length = CASES[case]
    pids = system.tunnel_pids()
    c0 = {n: cpu_ticks([p]) for n, p in pids.items()}
    s0, sk0, pub0 = sys_cpu(), udp_snmp(), udp_socket_drops(system.public)
    t0 = time.monotonic()
    res, err = iperf3(system.public, rate, length, args.duration)
    wall = time.monotonic() - t0
    c1 = {n: cpu_ticks([p]) for n, p in pids.items()}
    s1, sk1, pub1 = sys_cpu(), udp_snmp(), udp_socket_drops(system.public)
    tot, idle = s1[0] - s0[0], s1[1] - s0[1]
    row = {"system": system.key, "case": case, "rate": rate, "len": length, "ok": res is not None,
           "error": err, "wall_s": round(wall, 2),
           "sys_busy_pct": round(100 * (tot - idle) / tot, 1) if tot else None,
           "rcvbuf_errors": sk1["RcvbufErrors"] - sk0["RcvbufErrors"],
           "sndbuf_errors": sk1["SndbufErrors"] - sk0["SndbufErrors"],
           "public_socket_drops": drops_delta(pub0, pub1) if system.key != "direct" else None,
           "tunnel_cpu_pct": {n: round(100 * (c1[n] - c0[n]) / CLK_TCK / wall, 1) for n in pids}}
    if res:
        row.update(res)
    dead = system.dead()
    if dead:
        row["ok"], row["error"] = False, f"process(es) exited: {dead}"
    return row


def probe(system):
    """A short UDP test through the public port, retried until it passes (at most 30 s)."""
    deadline = time.monotonic() + 30
    last = None
    while time.monotonic() < deadline:
        res, err = iperf3(system.public, "1M", 1400, 1)
        if res and res["packets"] > 0 and res["lost_pct"] < 50:
            return
        last = err or f"lost {res['lost_pct']} %"
        system.start_service()
        time.sleep(0.5)
    raise RuntimeError(f"{system.key}: no UDP test passed through port {system.public} within 30 s ({last}); "
                       f"logs in {system.workdir}")


def med(rows, key):
    vals = [r[key] for r in rows if r.get("ok") and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--burrow", default=os.path.join(REPO, "target", "release", "burrow"))
    ap.add_argument("--rathole", default=shutil.which("rathole") or "/opt/peers/bin/rathole")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per iperf3 run (-t)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between measurements")
    ap.add_argument("--keep-logs", action="store_true", help="keep each system's work directory (logs, configs)")
    ap.add_argument("--out", help="also write every measurement as one JSON line to this file")
    args = ap.parse_args()
    keys = [k for k in args.systems.split(",") if k]
    cases = [c for c in args.cases.split(",") if c]
    for k in keys:
        if k not in SYSTEMS:
            ap.error(f"unknown system {k}")
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c}")
    if shutil.which("iperf3") is None:
        sys.exit("udp.py: iperf3 not found")
    if "rathole" in keys and not os.path.exists(args.rathole):
        print(f"udp.py: rathole not found at {args.rathole}; skipping it", file=sys.stderr)
        keys.remove("rathole")

    # SIGTERM/SIGHUP end the run through the finally below, like Ctrl-C.
    def _stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)

    systems, rows, counters = [], [], {}
    out = open(args.out, "w") if args.out else None
    try:
        for k in keys:
            s = System(k, args)
            systems.append(s)
            s.start()
            probe(s)
            print(f"udp.py: {LABEL[k]} ready (public {s.public}, service {s.service})", file=sys.stderr)
        time.sleep(1)
        for r in range(args.rounds):
            order = systems[r % len(systems):] + systems[:r % len(systems)]
            for case in cases:
                for s in order:
                    row = measure(s, case, args)
                    row["round"] = r + 1
                    rows.append(row)
                    if out:
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                    status = "ok" if row["ok"] else f"FAILED: {row['error']}"
                    print(f"udp.py: round {r + 1} {case:9} {LABEL[s.key]:15} "
                          f"{fmt(row.get('mbps'), '9.1f')} Mbit/s {fmt(row.get('pps'), '9.0f')} pps "
                          f"lost {fmt(row.get('lost_pct'), '6.2f')} % {status}", file=sys.stderr)
                    if not row["ok"]:
                        s.start_service()  # a failed test can leave iperf3 -s waiting
                    time.sleep(args.pause)
    finally:
        for s in systems:
            s.stop()
            counters[s.key] = s.burrow_counters()
            if args.keep_logs:
                print(f"udp.py: {LABEL[s.key]} logs kept in {s.workdir}", file=sys.stderr)
            else:
                shutil.rmtree(s.workdir, ignore_errors=True)
        if out:
            out.close()

    print(f"\nUDP through the tunnel: `iperf3 -c 127.0.0.1 -p PUBLIC -u -t {args.duration} -b RATE -l LEN`, "
          f"median of {args.rounds} interleaved rounds (receiver side)\n")
    print("| case | system | delivered Mbit/s | delivered datagrams/s | lost % (iperf3) | "
          "not delivered % of sent | jitter ms | sent datagrams/s | tunnel CPU % (server+client) | "
          "machine busy % |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case in cases:
        for s in systems:
            rs = [r for r in rows if r["system"] == s.key and r["case"] == case]
            for r in rs:
                r["tunnel_cpu_total"] = sum(r["tunnel_cpu_pct"].values()) if r["tunnel_cpu_pct"] else None
            bad = sum(not r["ok"] for r in rs)
            cpu = med(rs, "tunnel_cpu_total")
            print(f"| {case} | {LABEL[s.key]}{' ⚠ %d failed' % bad if bad else ''} | {fmt(med(rs, 'mbps'), '.1f')} | "
                  f"{fmt(med(rs, 'pps'), ',.0f')} | {fmt(med(rs, 'lost_pct'), '.2f')} | "
                  f"{fmt(med(rs, 'undelivered_pct'), '.2f')} | "
                  f"{fmt(med(rs, 'jitter_ms'), '.3f')} | {fmt(med(rs, 'sent_pps'), ',.0f')} | "
                  f"{'—' if s.key == 'direct' else fmt(cpu, '.0f')} | {fmt(med(rs, 'sys_busy_pct'), '.0f')} |")
    print("\nPer round. Datagrams: sent by iperf3, delivered, counted lost by iperf3; kernel UDP "
          "receive-buffer drops (RcvbufErrors, machine-wide) and, of those, drops on the tunnel's public "
          "socket; tunnel CPU % per process (100 = one core)\n")
    print("| case | system | round | Mbit/s | sent | delivered | lost (iperf3) | RcvbufErrors | "
          "public socket drops | CPU % |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for case in cases:
        for s in systems:
            for r in [r for r in rows if r["system"] == s.key and r["case"] == case]:
                cpu = ", ".join(f"{n} {v:.0f}" for n, v in r["tunnel_cpu_pct"].items()) or "—"
                got = r["packets"] - r["lost"] if r["ok"] else None
                print(f"| {case} | {LABEL[s.key]} | {r['round']} | {fmt(r.get('mbps'), '.1f')} | "
                      f"{fmt(r.get('sent'), 'd')} | {fmt(got, 'd')} | {fmt(r.get('lost'), 'd')} | {r['rcvbuf_errors']} | "
                      f"{fmt(r['public_socket_drops'], 'd')} | {cpu}{'' if r['ok'] else ' ⚠ ' + str(r['error'])} |")
    lines = [l for k in counters for l in counters[k]]
    if lines:
        print("\nburrow datagram counters (whole run, logged when the datagram connection went down):\n")
        for k in counters:
            for l in counters[k]:
                print(f"- {LABEL[k]}: `{l}`")


if __name__ == "__main__":
    main()

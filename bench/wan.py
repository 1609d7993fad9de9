#!/usr/bin/env python3
"""First byte for 64 visitors arriving at once, and bulk throughput, over a 50 ms round trip
between client and server.

For each tunnel (burrow on each carrier, rathole; with --rathole-noise rathole's encrypted
transport too) this starts the server, puts ../shared/testbed/wanem.py between the client and
the server (25 ms each way; for burrow's QUIC carrier, a UDP relay with the same delay), starts
the client, and then, ROUNDS times, opens 64
visitor connections to the public port at the same instant. Each visitor sends one byte to an
echo service behind the client and times how long the echo takes to come back. The visitor and
the server sit on the same side of the WAN, so a visitor that finds a warm data connection waits
one round trip (50 ms) plus processing; one that does not waits for a data connection to be
dialled across the WAN first.

With --bulk-mb N, each tunnel is also measured downloading N MB from a service behind the client
through a path capped at --rate-mbit (100) each way: wanem paces each TCP connection to the cap,
and the UDP relay paces all of a QUIC connection's datagrams to it (wanem itself has no rate cap
for UDP). The figure is the delivered rate and its share of the cap.

  bench/wan.py [--burrow target/release/burrow] [--rathole PATH] [--rathole-noise] [--rounds 3]
               [--visitors 64] [--pool-sizes 8,64] [--carriers plain,tls,mux,quic] [--bulk-mb 50]
               [--rate-mbit 100]

Prints markdown tables: p50, p99 and max first-byte time in ms and in round trips, per round
(round 1 meets the pool as it is after start; later rounds, 5 s apart, see what the pool learnt),
and the bulk rates. Everything listens on 127.0.0.1 only; every wait is bounded.
"""
import argparse, asyncio, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.environ.get("BURROW_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
WANEM = os.path.join(SHARED, "testbed", "wanem.py")
RTT_MS = 50.0
TOKEN = "wan-bench-token-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def echo_server():
    async def serve(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=4096)
    return server, server.sockets[0].getsockname()[1]


class Procs:
    """Processes of one tunnel, stopped together."""

    def __init__(self, workdir):
        self.workdir, self.procs = workdir, []

    def spawn(self, name, args):
        log = open(os.path.join(self.workdir, name + ".log"), "w")
        env = dict(os.environ, RUST_LOG="warn", BURROW_LOG="warn")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(p)
        return p

    def log(self, name):
        with open(os.path.join(self.workdir, name + ".log")) as f:
            return f.read()

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


async def wait_for(cond, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


async def first_byte(port):
    """Connect, send one byte, return ms until the echo arrives (or None on failure)."""
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 15)
        writer.write(b"x")
        await writer.drain()
        data = await asyncio.wait_for(reader.readexactly(1), 15)
        ms = (time.monotonic() - t0) * 1000
        writer.close()
        return ms if data == b"x" else None
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        return None


async def forwarding(port):
    return await first_byte(port) is not None


def start_wanem(procs, ctrl, rate_mbit=0.0, udp=False):
    wan_port = free_port()
    if udp:
        # wanem's UDP relay has no rate cap: this file's own relay paces the datagrams.
        args = [sys.executable, os.path.abspath(__file__), "--udp-relay", f"127.0.0.1:{wan_port}",
                f"127.0.0.1:{ctrl}", str(RTT_MS / 2), str(rate_mbit)]
    else:
        args = [sys.executable, WANEM, "--listen", f"127.0.0.1:{wan_port}", "--to", f"127.0.0.1:{ctrl}",
                "--delay-ms", str(RTT_MS / 2)] + (["--rate-mbit", str(rate_mbit)] if rate_mbit else [])
    procs.spawn("wanem", args)
    return wan_port


async def start_burrow(procs, binary, service, public, carrier, pool, rate_mbit=0.0):
    """burrow on `carrier`: plain (pooled TCP, --insecure-plain), tls (pooled TLS), mux or quic."""
    ctrl = free_port()
    plain = carrier == "plain"
    flags = ["--insecure-plain"] if plain else []
    extra = ["--quic-listen", f"127.0.0.1:{ctrl}"] if carrier == "quic" else []
    procs.spawn("server", [binary, "server", "--listen", f"127.0.0.1:{ctrl}", "--ports", f"{public}-{public}",
                           "--public-bind", "127.0.0.1", "--token", TOKEN,
                           "--state-dir", os.path.join(procs.workdir, "state")] + flags + extra)
    await wait_for(lambda: "listening on" in procs.log("server"), "burrow server")
    if not plain:
        fp = next(l.split()[1] for l in procs.log("server").splitlines() if l.startswith("fingerprint "))
        flags = ["--server-fingerprint", fp]
    if carrier in ("mux", "quic"):
        flags += ["--carrier", carrier]
    wan = start_wanem(procs, ctrl, rate_mbit, udp=carrier == "quic")
    await wait_for(lambda: "wanem: ready" in procs.log("wanem"), "wanem")
    procs.spawn("client", [binary, "tcp", str(service), "--to", f"127.0.0.1:{wan}", "--remote-port", str(public),
                           "--token", TOKEN, "--known-hosts", os.path.join(procs.workdir, "known"),
                           "--pool-size", str(pool)] + flags)


async def start_baseline(procs, service, public):
    """No tunnel: visitors cross the emulated WAN straight to the echo service. It shows what
    the emulator itself adds for 64 connections at once."""
    procs.spawn("wanem", [sys.executable, WANEM, "--listen", f"127.0.0.1:{public}",
                          "--to", f"127.0.0.1:{service}", "--delay-ms", str(RTT_MS / 2)])
    await wait_for(lambda: "wanem: ready" in procs.log("wanem"), "wanem")


def rathole_noise_keys(binary):
    """A Noise key pair from `rathole --genkey`: (private, public)."""
    out = subprocess.run([binary, "--genkey"], capture_output=True, text=True, timeout=10).stdout
    lines = [l.strip() for l in out.splitlines()]
    key = lambda label: next(lines[i + 1] for i, l in enumerate(lines) if label in l)
    return key("Private Key"), key("Public Key")


async def start_rathole(procs, binary, service, public, rate_mbit=0.0, noise=False):
    """rathole with its defaults, over plain TCP or (noise=True) its Noise transport, the
    encrypted one to compare burrow's TLS carrier with."""
    ctrl = free_port()
    server_transport = client_transport = ""
    if noise:
        private, public_key = rathole_noise_keys(binary)
        server_transport = f'[server.transport]\ntype = "noise"\n[server.transport.noise]\nlocal_private_key = "{private}"\n'
        client_transport = f'[client.transport]\ntype = "noise"\n[client.transport.noise]\nremote_public_key = "{public_key}"\n'
    with open(os.path.join(procs.workdir, "server.toml"), "w") as f:
        f.write(f'[server]\nbind_addr = "127.0.0.1:{ctrl}"\n{server_transport}[server.services.wan]\n'
                f'token = "{TOKEN}"\nbind_addr = "127.0.0.1:{public}"\n')
    procs.spawn("server", [binary, "--server", os.path.join(procs.workdir, "server.toml")])
    wan = start_wanem(procs, ctrl, rate_mbit)
    await wait_for(lambda: "wanem: ready" in procs.log("wanem"), "wanem")
    with open(os.path.join(procs.workdir, "client.toml"), "w") as f:
        f.write(f'[client]\nremote_addr = "127.0.0.1:{wan}"\n{client_transport}[client.services.wan]\n'
                f'token = "{TOKEN}"\nlocal_addr = "127.0.0.1:{service}"\n')
    procs.spawn("client", [binary, "--client", os.path.join(procs.workdir, "client.toml")])


def summary(samples):
    ok = sorted(s for s in samples if s is not None)
    if not ok:
        return None
    p99 = ok[min(len(ok) - 1, int(round(0.99 * (len(ok) - 1))))]
    return statistics.median(ok), p99, ok[-1], len(samples) - len(ok)


async def measure(name, start, args):
    workdir = tempfile.mkdtemp(prefix=f"burrow-wan-{name}-")
    procs = Procs(workdir)
    rows = []
    try:
        public = free_port()
        await start(procs, public)
        deadline = time.monotonic() + 30
        while not await forwarding(public):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the tunnel did not forward within 30 s; logs in {workdir}")
            await asyncio.sleep(0.2)
        # Let the pools settle after the probe (measurement setup, not a readiness wait).
        await asyncio.sleep(3)
        for r in range(1, args.rounds + 1):
            samples = await asyncio.gather(*(first_byte(public) for _ in range(args.visitors)))
            rows.append((name, r, summary(samples)))
            await asyncio.sleep(5)
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows


async def bulk_server(mb):
    """A service that sends `mb` MB to each connection, then closes it."""
    chunk = os.urandom(65536)

    async def serve(reader, writer):
        try:
            left = mb * 1_000_000
            while left > 0:
                writer.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
                await writer.drain()
            writer.write_eof()
            await reader.read()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def download(port, mb, timeout=180):
    """Mbit/s of one download of `mb` MB through the tunnel (None when it failed or fell short)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 15)
        t0, got = time.monotonic(), 0
        while True:
            data = await asyncio.wait_for(reader.read(1 << 20), timeout)
            if not data:
                break
            got += len(data)
        seconds = time.monotonic() - t0
        writer.close()
        return got * 8 / seconds / 1e6 if got == mb * 1_000_000 else None
    except (OSError, asyncio.TimeoutError):
        return None


async def measure_bulk(name, start, args):
    workdir = tempfile.mkdtemp(prefix=f"burrow-wan-bulk-")
    procs = Procs(workdir)
    try:
        public = free_port()
        await start(procs, public)
        deadline = time.monotonic() + 30
        while not await forwarding_bulk(public):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the tunnel did not forward within 30 s; logs in {workdir}")
            await asyncio.sleep(0.2)
        return [(name, r, await download(public, args.bulk_mb)) for r in range(1, args.rounds + 1)]
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def forwarding_bulk(port):
    """True once a connection through the tunnel receives the service's first bytes."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        data = await asyncio.wait_for(reader.read(1), 10)
        writer.close()
        return bool(data)
    except (OSError, asyncio.TimeoutError):
        return False


def udp_relay(listen, to, delay_ms, rate_mbit):
    """A UDP relay with a one-way delay and, per direction, a pacing cap shared by every client
    address (one QUIC connection here): datagrams beyond what the cap allows within a 100 ms
    queue are dropped, as a router's full queue would."""
    delay, rate = float(delay_ms) / 1000, float(rate_mbit) * 1e6
    queue_limit = 0.1

    async def run():
        loop = asyncio.get_running_loop()
        upstreams, free_at = {}, {"up": 0.0, "down": 0.0}

        def pace(direction, size, send):
            now = time.monotonic()
            at = now
            if rate:
                start = max(free_at[direction], now)
                if start - now > queue_limit:
                    return
                free_at[direction] = start + size * 8 / rate
                at = free_at[direction]
            loop.call_later(at - now + delay, send)

        class Side(asyncio.DatagramProtocol):
            def __init__(self, on):
                self.on = on

            def datagram_received(self, data, addr):
                self.on(data, addr)

        def from_client(data, client):
            up = upstreams.get(client)
            if up is None:
                up = upstreams[client] = asyncio.ensure_future(loop.create_datagram_endpoint(
                    lambda: Side(lambda d, _a: pace("down", len(d), lambda: front.sendto(d, client))),
                    remote_addr=split(to)))

            def send():
                if up.done():
                    up.result()[0].sendto(data)
                else:
                    up.add_done_callback(lambda f: f.result()[0].sendto(data))
            pace("up", len(data), send)

        front, _ = await loop.create_datagram_endpoint(lambda: Side(from_client), local_addr=split(listen))
        print("wanem: ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


def split(hostport):
    host, _, port = hostport.rpartition(":")
    return host, int(port)


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--burrow", default=os.path.join(REPO, "target", "release", "burrow"))
    ap.add_argument("--rathole", default=shutil.which("rathole") or "/opt/peers/bin/rathole")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--visitors", type=int, default=64)
    ap.add_argument("--pool-sizes", default="8,64", help="burrow --pool-size values to measure (8 is the default)")
    ap.add_argument("--carriers", default="plain,tls,mux,quic", help="burrow carriers to measure")
    ap.add_argument("--bulk-mb", type=int, default=0, help="also download this many MB through each tunnel")
    ap.add_argument("--rate-mbit", type=float, default=100.0, help="the path's cap for the bulk case")
    ap.add_argument("--skip-first-byte", action="store_true", help="only the bulk case")
    ap.add_argument("--rathole-noise", action="store_true",
                    help="also measure rathole's encrypted Noise transport (first byte)")
    args = ap.parse_args()
    carriers = [c for c in args.carriers.split(",") if c]
    have_rathole = os.path.exists(args.rathole)
    if not have_rathole:
        print(f"wan.py: rathole not found at {args.rathole}; measuring burrow only", file=sys.stderr)
    rows, bulk = [], []
    if not args.skip_first_byte:
        server, service = await echo_server()
        async with server:
            rows += await measure("no tunnel (wanem only)", lambda p, s: start_baseline(p, service, s), args)
            for pool in [int(n) for n in args.pool_sizes.split(",")]:
                for carrier in carriers:
                    name = f"burrow ({carrier}, pool {pool})"
                    start = lambda p, s, c=carrier, pool=pool: start_burrow(p, args.burrow, service, s, c, pool)
                    rows += await measure(name, start, args)
            if have_rathole:
                rows += await measure("rathole (tcp)", lambda p, s: start_rathole(p, args.rathole, service, s), args)
                if args.rathole_noise:
                    start = lambda p, s: start_rathole(p, args.rathole, service, s, noise=True)
                    rows += await measure("rathole (noise)", start, args)
    if args.bulk_mb:
        server, service = await bulk_server(args.bulk_mb)
        async with server:
            for carrier in carriers:
                start = lambda p, s, c=carrier: start_burrow(p, args.burrow, service, s, c, 8, args.rate_mbit)
                bulk += await measure_bulk(f"burrow ({carrier})", start, args)
            if have_rathole:
                start = lambda p, s: start_rathole(p, args.rathole, service, s, args.rate_mbit)
                bulk += await measure_bulk("rathole (tcp)", start, args)
    if rows:
        print(f"\nFirst byte for {args.visitors} visitors at once, {RTT_MS:.0f} ms round trip between client and server\n")
        print("| tunnel | round | p50 ms | p99 ms | max ms | p50 RTTs | p99 RTTs | failed |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, r, s in rows:
            if s is None:
                print(f"| {name} | {r} | — | — | — | — | — | all |")
                continue
            p50, p99, mx, failed = s
            print(f"| {name} | {r} | {p50:.0f} | {p99:.0f} | {mx:.0f} | {p50 / RTT_MS:.2f} | {p99 / RTT_MS:.2f} | {failed} |")
    if bulk:
        print(f"\nOne download of {args.bulk_mb} MB, {RTT_MS:.0f} ms round trip, path capped at {args.rate_mbit:.0f} Mbit/s each way\n")
        print("| tunnel | round | Mbit/s | share of the cap |")
        print("|---|---:|---:|---:|")
        for name, r, mbit in bulk:
            if mbit is None:
                print(f"| {name} | {r} | failed | — |")
            else:
                print(f"| {name} | {r} | {mbit:.1f} | {mbit / args.rate_mbit:.0%} |")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--udp-relay":
        udp_relay(*sys.argv[2:])
    else:
        asyncio.run(main())

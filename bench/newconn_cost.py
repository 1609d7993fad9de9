#!/usr/bin/env python3
"""Instructions per new-connection request through burrow's plain carrier, under callgrind.

Starts a small HTTP service (1 KiB answer, one request per connection), a burrow server and a
burrow client under `valgrind --tool=callgrind` (instruction counts: stable on a shared, noisy
machine, unlike time), sends warm-up requests, zeroes the counters, sends `--requests` requests
with `Connection: close` through the tunnel (`--concurrency` at once), dumps the counters and
prints instructions per request for the server and the client separately.

    python3 bench/newconn_cost.py --burrow target/release/burrow --requests 2000
    callgrind_annotate --inclusive=yes /tmp/newconn-cost/server.out.* | head -60

The dumps stay in --out-dir for callgrind_annotate. --rathole runs rathole the same way, for
comparison (a server and a client config with the plain TCP transport and its default pool).
"""

import argparse
import asyncio
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BODY = b"x" * 1024
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n" + BODY
)
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(port, ready):
    async def one(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(one, "127.0.0.1", port, backlog=1024)
    ready.set()
    async with server:
        await server.serve_forever()


async def request(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data.endswith(BODY) and data.startswith(b"HTTP/1.1 200")


async def load(port, total, concurrency):
    """Sends `total` requests, `concurrency` at a time; returns the number that failed."""
    failed = 0
    left = total

    async def worker():
        nonlocal failed, left
        while left > 0:
            left -= 1
            try:
                ok = await asyncio.wait_for(request(port), 30)
            except (OSError, asyncio.TimeoutError):
                ok = False
            failed += 0 if ok else 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


def wait_forward(port, deadline_s=60):
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        try:
            if asyncio.run(asyncio.wait_for(request(port), 5)):
                return True
        except (OSError, asyncio.TimeoutError):
            pass
        time.sleep(0.2)
    return False


def spawn(out_dir, role, cmd, native=False):
    """Starts `cmd` under callgrind (or natively, for --strace), output to ROLE.log."""
    out = os.path.join(out_dir, f"{role}.out")
    vg = [] if native else ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p",
                            "--dump-instr=no"]
    log = open(os.path.join(out_dir, f"{role}.log"), "w")
    return subprocess.Popen(vg + cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {
        "RUST_LOG": "warn", "BURROW_LOG": "warn"})


def control(args, pid):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def dumped_total(out_dir, role, pid):
    """Instructions in the dumps made after zeroing (the last dump of the process)."""
    files = sorted(glob.glob(os.path.join(out_dir, f"{role}.out.{pid}.*")),
                   key=lambda f: int(f.rsplit(".", 1)[1]))
    if not files:
        raise SystemExit(f"no callgrind dump for {role} ({pid}) in {out_dir}")
    with open(files[-1]) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1]), files[-1]
    raise SystemExit(f"no totals in {files[-1]}")


def start_burrow(args, out_dir, ctrl, public, service):
    state = os.path.join(out_dir, "state")
    server = spawn(out_dir, "server", [
        args.burrow, "server", "--listen", f"127.0.0.1:{ctrl}", "--ports", f"{public}-{public}",
        "--token", "bench-token-0123456789", "--state-dir", state, "--insecure-plain"], args.strace)
    time.sleep(1)
    client = spawn(out_dir, "client", [
        args.burrow, "tcp", str(service), "--local-host", "127.0.0.1", "--to",
        f"127.0.0.1:{ctrl}", "--remote-port", str(public), "--token", "bench-token-0123456789",
        "--known-hosts", os.path.join(out_dir, "known_servers"), "--insecure-plain"], args.strace)
    return server, client


def start_rathole(args, out_dir, ctrl, public, service):
    token = "bench-token-0123456789"
    with open(os.path.join(out_dir, "server.toml"), "w") as f:
        f.write(f'[server]\nbind_addr = "127.0.0.1:{ctrl}"\n[server.services.s]\n'
                f'token = "{token}"\nbind_addr = "127.0.0.1:{public}"\n')
    with open(os.path.join(out_dir, "client.toml"), "w") as f:
        f.write(f'[client]\nremote_addr = "127.0.0.1:{ctrl}"\n[client.services.s]\n'
                f'token = "{token}"\nlocal_addr = "127.0.0.1:{service}"\n')
    server = spawn(out_dir, "server", [args.rathole, "--server",
                                           os.path.join(out_dir, "server.toml")], args.strace)
    time.sleep(1)
    client = spawn(out_dir, "client", [args.rathole, "--client",
                                           os.path.join(out_dir, "client.toml")], args.strace)
    return server, client


def attach_strace(out_dir, role, pid):
    """strace -c on every thread of `pid` (runtime threads exist by now)."""
    tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    cmd = ["strace", "-c", "-f", "-o", os.path.join(out_dir, f"{role}.strace")]
    for tid in tids:
        cmd += ["-p", tid]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    time.sleep(1)  # attached
    return proc


def strace_counts(out_dir, role):
    """{syscall: calls} from an `strace -c` summary."""
    counts = {}
    with open(os.path.join(out_dir, f"{role}.strace")) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                counts[parts[-1]] = int(parts[3])
    return counts


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--burrow", default="target/release/burrow")
    p.add_argument("--rathole", help="measure this rathole binary instead of burrow")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--strace", action="store_true",
                   help="count system calls per request (strace -c, no callgrind) instead")
    p.add_argument("--out-dir", default=os.path.join(tempfile.gettempdir(), "newconn-cost"))
    args = p.parse_args()
    if args.rathole is None:
        args.burrow = os.path.abspath(args.burrow)
    shutil.rmtree(args.out_dir, ignore_errors=True)
    os.makedirs(args.out_dir)
    ctrl, public, service = free_port(), free_port(), free_port()

    ready = threading.Event()
    threading.Thread(target=lambda: asyncio.run(serve(service, ready)), daemon=True).start()
    ready.wait()

    start = start_rathole if args.rathole else start_burrow
    server, client = start(args, args.out_dir, ctrl, public, service)
    procs = {"server": server, "client": client}
    tracers = {}
    try:
        if not wait_forward(public):
            raise SystemExit(f"the tunnel did not forward; see {args.out_dir}/*.log")
        failed = asyncio.run(load(public, args.warmup, args.concurrency))
        time.sleep(1)  # let the pool refill before counting
        for role, proc in procs.items():
            if args.strace:
                tracers[role] = attach_strace(args.out_dir, role, proc.pid)
            else:
                control(["-z"], proc.pid)
        t0 = time.time()
        failed += asyncio.run(load(public, args.requests, args.concurrency))
        elapsed = time.time() - t0
        time.sleep(1)  # replacement data connections finish their handshakes
        for role, proc in procs.items():
            if args.strace:
                tracers[role].send_signal(signal.SIGINT)
                tracers[role].wait(20)
            else:
                control(["-d"], proc.pid)
        time.sleep(0.5)
        n = args.requests
        print(f"requests {n} (failed {failed}), {elapsed:.1f} s")
        if args.strace:
            report_syscalls(args.out_dir, n)
        else:
            report_instructions(args.out_dir, procs, n)
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 1 if failed else 0


def report_instructions(out_dir, procs, n):
    totals = {}
    for role, proc in procs.items():
        total, dump = dumped_total(out_dir, role, proc.pid)
        totals[role] = total
        print(f"{role:<7} {total:>14,} Ir  {total / n:>10,.0f} Ir/request  ({dump})")
    both = sum(totals.values())
    print(f"{'total':<7} {both:>14,} Ir  {both / n:>10,.0f} Ir/request")


def report_syscalls(out_dir, n):
    for role in ("server", "client"):
        counts = strace_counts(out_dir, role)
        total = sum(counts.values())
        top = sorted(counts.items(), key=lambda kv: -kv[1])
        detail = ", ".join(f"{name} {calls / n:.2f}" for name, calls in top if calls / n >= 0.05)
        print(f"{role:<7} {total / n:6.2f} syscalls/request: {detail}")


if __name__ == "__main__":
    sys.exit(main())

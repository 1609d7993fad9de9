#!/usr/bin/env python3
"""Write the link order of burrow's code that runs at start, at rest and per visitor.

The kernel maps a program's code in 64 KiB windows around each page it touches, so an idle
burrow process holds resident every window that any function it ran sits in. Left to itself,
the linker scatters those functions over the whole 10 MiB of code. This script runs a release
binary's server and client under valgrind's callgrind for each carrier and the HTTP edge (and
the plain carrier again at the default log level), sends a few visitors through, lets both sides rest, and writes the functions that ran (linker symbol
names, first run first) to crates/cli/link/code-order.txt. crates/cli/build.rs passes that file
to the linker (`--symbol-ordering-file`), which puts those functions next to each other at the
start of the code; see docs/benchmarks.md.

Symbol names carry hashes that change with the toolchain and the dependencies' versions: run
this again after either changes. The static build (scripts/build-static.sh) is compiled with
other flags, so its names carry other hashes, and it has libc's functions in it: the file
holds the order of both builds, the static one's first (each build's linker skips the other's
names). `--check` only says how much of the file each binary still matches. Needs valgrind
(apt-get install valgrind).

    cargo build --release --locked -p burrow && scripts/build-static.sh
    python3 scripts/code-order.py            # writes crates/cli/link/code-order.txt
    cargo build --release --locked -p burrow && scripts/build-static.sh   # link with it
    python3 scripts/code-order.py --check
"""

import argparse
import http.server
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER_FILE = os.path.join(ROOT, "crates", "cli", "link", "code-order.txt")
DEFAULT_BINARIES = [
    os.path.join(ROOT, "target", "x86_64-unknown-linux-gnu", "release", "burrow"),  # static
    os.path.join(ROOT, "target", "release", "burrow"),
]
TOKEN = "code-order-token-0123456789"
VISITORS = 20
HEADER = """\
# Functions of the burrow binary that run at start, at rest and per visitor, in the order they
# first ran: the linker puts them first in the code (crates/cli/build.rs), so that an idle
# process maps in a few hundred KiB of code instead of most of it. Written by
# scripts/code-order.py from the static release build, then the dynamic one; regenerate after a
# toolchain or dependency upgrade (names that no longer exist are skipped by the linker).
"""

# (name, server flags, client subcommand and flags, log level); {echo}, {ctrl}, {edge}, {pub} are
# ports. The carriers run at `warn`, as the benchmarks run them; the last scenario is the plain
# carrier at the default level, `info`, so that the code that writes log lines comes last in
# each process's part (a process that logs less never touches it).
SCENARIOS = [
    ("plain", ["--insecure-plain"], ["tcp", "{echo}", "--remote-port", "{pub}", "--insecure-plain"],
     "warn"),
    ("tls", [], ["tcp", "{echo}", "--remote-port", "{pub}", "FINGERPRINT"], "warn"),
    ("mux", [], ["tcp", "{echo}", "--remote-port", "{pub}", "--carrier", "mux", "FINGERPRINT"],
     "warn"),
    ("quic", ["--quic-listen", "127.0.0.1:{ctrl}"],
     ["tcp", "{echo}", "--remote-port", "{pub}", "--carrier", "quic", "FINGERPRINT"], "warn"),
    ("http", ["--http-listen", "127.0.0.1:{edge}"],
     ["http", "{web}", "--subdomain", "app", "FINGERPRINT"], "warn"),
    ("info", ["--insecure-plain"], ["tcp", "{echo}", "--remote-port", "{pub}", "--insecure-plain"],
     "info"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Echo(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                while data := self.request.recv(65536):
                    self.request.sendall(data)

        super().__init__(("127.0.0.1", 0), Handler)


class Web(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"hello\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def wait_for(what, check, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            sys.exit(f"code-order: {what}: the process exited ({proc.returncode})")
        time.sleep(0.1)
    sys.exit(f"code-order: timed out waiting for {what}")


def probe_tcp(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"ping")
            return s.recv(16) == b"ping"
    except OSError:
        return False


def probe_http(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/app/", timeout=5) as r:
            return r.status == 200 and r.read() == b"hello\n"
    except OSError:
        return False


def run(binary, name, server_flags, client_args, level, work):
    echo, web = Echo(), Web()
    for srv in (echo, web):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    ports = {"echo": echo.server_address[1], "web": web.server_address[1], "ctrl": free_port(),
             "edge": free_port(), "pub": free_port()}
    state = os.path.join(work, name)
    os.makedirs(state)
    env = dict(os.environ, BURROW_LOG=level, RUST_LOG=level)

    def under_callgrind(who, args):
        out = os.path.join(state, f"{who}.callgrind")
        log = open(os.path.join(state, f"{who}.log"), "w")
        cmd = ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}",
               binary] + [a.format(**ports) for a in args]
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), out, log.name

    server, server_out, server_log = under_callgrind("server", [
        "server", "--listen", "127.0.0.1:{ctrl}", "--ports", "{pub}-{pub}", "--token", TOKEN,
        "--state-dir", state] + server_flags)
    read = lambda path: open(path).read()
    wait_for(f"{name}: the server's listening line",
             lambda: re.search(r"^listening on ", read(server_log), re.M), server)
    fingerprint = re.search(r"^fingerprint (sha256:[0-9a-f]{64})$", read(server_log), re.M)
    trust = ["--server-fingerprint", fingerprint.group(1)] if fingerprint else []
    args = []
    for a in client_args:
        args += trust if a == "FINGERPRINT" else [a]
    client, client_out, _ = under_callgrind("client", args + [
        "--to", "127.0.0.1:{ctrl}", "--token", TOKEN,
        "--known-hosts", os.path.join(state, "known_servers")])
    probe = (lambda: probe_http(ports["edge"])) if name == "http" else (lambda: probe_tcp(ports["pub"]))
    wait_for(f"{name}: a first visitor through the tunnel", probe, client)
    for _ in range(VISITORS):
        if not probe():
            sys.exit(f"code-order: {name}: a visitor failed")
    time.sleep(3)  # at rest: timers and keepalives run
    for proc in (client, server):
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    echo.shutdown()
    web.shutdown()
    return [server_out, client_out]


def functions(callgrind_out, binary):
    """Symbols of `binary` that ran, in the order callgrind first names them."""
    objects, names, seen, order = {}, {}, set(), []
    current, callee_object = None, None
    line_re = re.compile(r"^(ob|cob|fn|cfn)=\((\d+)\)(?: (.*))?$")
    for line in open(callgrind_out, errors="replace"):
        m = line_re.match(line.rstrip("\n"))
        if not m:
            continue
        kind, key, text = m.groups()
        if kind in ("ob", "cob"):
            if text:
                objects[key] = text
            if kind == "ob":
                current = objects[key]
            else:
                callee_object = objects[key]
            continue
        if text:
            names[key] = text
        obj = current if kind == "fn" else (callee_object or current)
        if kind == "cfn":
            callee_object = None
        name = re.sub(r"'\d+$", "", names[key])  # callgrind's recursion-depth suffix
        if obj and os.path.basename(obj) == os.path.basename(binary) and name not in seen \
                and not name.startswith(("(", "0x")):
            seen.add(name)
            order.append(name)
    return order


def layout_key(ran, first_run):
    """Sort key that keeps each process's code together: functions both roles run, then the
    server's own, then the client's own; within each, the ones every carrier runs first, then
    by carrier in SCENARIOS order (a plain-carrier process's code is a prefix of its part)."""
    roles = {role for _, role in ran}
    role_rank = 0 if len(roles) == 2 else (1 if "server" in roles else 2)
    names = {name for name, _ in ran}
    return (role_rank, len(names) != len(SCENARIOS),
            tuple(n not in names for n, _, _, _ in SCENARIOS), first_run)


def binary_symbols(binary):
    out = subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout
    return {parts[2] for parts in (l.split() for l in out.splitlines()) if len(parts) == 3}


def code_order(binary):
    """The functions of `binary` that ran in any scenario, in link order."""
    # Which processes ran each function: (scenario, "server" | "client") pairs, in first-run order.
    ran, first = {}, {}
    with tempfile.TemporaryDirectory(prefix="burrow-code-order-") as work:
        for name, server_flags, client_args, level in SCENARIOS:
            outs = run(binary, name, server_flags, client_args, level, work)
            for role, out in zip(("server", "client"), outs):
                for f in functions(out, binary):
                    first.setdefault(f, len(first))
                    ran.setdefault(f, set()).add((name, role))
            print(f"{name}: {len(first)} functions so far", file=sys.stderr)
    if not first:
        sys.exit(f"code-order: callgrind saw no function of {binary}")
    return sorted(first, key=lambda f: layout_key(ran[f], first[f]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--burrow", action="append",
                    help="a release binary (repeatable; default: the static build, then "
                         "target/release/burrow)")
    ap.add_argument("--out", default=ORDER_FILE)
    ap.add_argument("--check", action="store_true",
                    help="only report how many of the file's names each binary has")
    a = ap.parse_args()
    binaries = [os.path.abspath(b) for b in a.burrow or DEFAULT_BINARIES]
    for binary in binaries:
        if not os.access(binary, os.X_OK):
            sys.exit(f"code-order: no binary at {binary} (scripts/build-static.sh, "
                     "cargo build --release --locked -p burrow)")
    if a.check:
        listed = [l.split("#")[0].strip() for l in open(a.out)]
        listed = [l for l in listed if l]
        for binary in binaries:
            have = binary_symbols(binary)
            found = sum(1 for l in listed if l in have)
            print(f"{found} of the {len(listed)} functions in {a.out} are in {binary}")
        return
    # One binary's order after another's: each linker finds only its own build's names, and the
    # few both builds share (C functions, `main`) keep the first build's place.
    order = {}
    for binary in binaries:
        print(f"{binary}:", file=sys.stderr)
        order.update((f, None) for f in code_order(binary) if f not in order)
    with open(a.out, "w") as f:
        f.write(HEADER + "".join(n + "\n" for n in order))
    print(f"wrote {len(order)} functions to {a.out}")


if __name__ == "__main__":
    main()

# Bulk transfers for tests/nat/quic.sh: a target that sends or swallows a deterministic stream,
# and visitors that move it at a bounded pace and check its SHA-256.
#
#   bulk.py serve ADDR PORTFILE            the target: binds ADDR:0, writes its port to PORTFILE
#   bulk.py get HOST PORT MIB RATE PROGRESS   download MIB MiB, at most RATE MiB/s
#   bulk.py put HOST PORT MIB RATE PROGRESS   upload MIB MiB, at most RATE MiB/s
#
# A connection starts with one line: "get SEED MIB" asks the target for the stream SEED of MIB
# MiB, then EOF; "put" makes the target read to EOF and answer "<sha256 hex> <bytes>". Block i
# (1 MiB) of stream SEED is shake_256("SEED i"), so both ends know what must arrive without
# trusting the other. Visitors write how many bytes they have moved to PROGRESS (replaced
# atomically), so the test can act at a given point of the transfer without guessing times.
import hashlib, os, socket, socketserver, sys, time

MIB = 1 << 20
CHUNK = 256 << 10
TIMEOUT = 20  # seconds a single read or write may stall before the visitor gives up


def block(seed, i):
    return hashlib.shake_256(f"{seed} {i}".encode()).digest(MIB)


class Target(socketserver.StreamRequestHandler):
    def handle(self):
        words = self.rfile.readline().split()
        if len(words) == 3 and words[0] == b"get":
            seed, mib = words[1].decode(), int(words[2])
            for i in range(mib):
                self.wfile.write(block(seed, i))
        elif words == [b"put"]:
            digest, n = hashlib.sha256(), 0
            while data := self.rfile.read1(CHUNK):
                digest.update(data)
                n += len(data)
            self.wfile.write(f"{digest.hexdigest()} {n}\n".encode())
        else:
            self.wfile.write(b"error: unknown command\n")


def serve(addr, portfile):
    socketserver.ThreadingTCPServer.daemon_threads = True
    server = socketserver.ThreadingTCPServer((addr, 0), Target)
    with open(portfile + ".tmp", "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.rename(portfile + ".tmp", portfile)
    server.serve_forever()


class Meter:
    """Counts bytes moved, holds them to RATE MiB/s, and reports progress to a file."""

    def __init__(self, rate, progress):
        self.rate, self.progress = rate * MIB, progress
        self.start, self.done, self.reported = time.monotonic(), 0, -1

    def add(self, n):
        self.done += n
        if self.done // MIB != self.reported // MIB:
            self.reported = self.done
            with open(self.progress + ".tmp", "w") as f:
                f.write(f"{self.done}\n")
            os.replace(self.progress + ".tmp", self.progress)
        # The pace under test, not a readiness wait: never run ahead of RATE.
        ahead = self.done / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)

    def seconds(self):
        return time.monotonic() - self.start


def get(s, mib, meter):
    seed = f"download-{os.getpid()}"
    expected = hashlib.sha256()
    for i in range(mib):
        expected.update(block(seed, i))
    s.sendall(f"get {seed} {mib}\n".encode())
    got = hashlib.sha256()
    while data := s.recv(CHUNK):
        got.update(data)
        meter.add(len(data))
    if meter.done != mib * MIB or got.digest() != expected.digest():
        sys.exit(f"get: {meter.done} bytes arrived with sha256 {got.hexdigest()}, "
                 f"expected {mib * MIB} with {expected.hexdigest()}")
    return expected.hexdigest()


def put(s, mib, meter):
    seed = f"upload-{os.getpid()}"
    s.sendall(b"put\n")
    sent = hashlib.sha256()
    for i in range(mib):
        data = block(seed, i)
        sent.update(data)
        for at in range(0, MIB, CHUNK):
            s.sendall(data[at:at + CHUNK])
            meter.add(CHUNK)
    s.shutdown(socket.SHUT_WR)
    answer = s.makefile("rb").readline().decode().strip()
    if answer != f"{sent.hexdigest()} {mib * MIB}":
        sys.exit(f"put: the target got '{answer}', expected '{sent.hexdigest()} {mib * MIB}'")
    return sent.hexdigest()


def visit(role, host, port, mib, rate, progress):
    meter = Meter(float(rate), progress)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
        digest = (get if role == "get" else put)(s, int(mib), meter)
    print(f"{role}: {mib} MiB intact (sha256 {digest[:16]}…) in {meter.seconds():.1f} s")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(*sys.argv[2:4])
    else:
        visit(*sys.argv[1:7])

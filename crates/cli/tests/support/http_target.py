"""An HTTP target for burrow's edge tests: reports what it received.

    http_target.py ID [--tls CERT KEY]

Prints `listening on PORT` once it accepts connections. Routes:
  GET  /...          JSON: id, path, the Host and X-Forwarded-* headers it got
  POST /upload       reads the body (Content-Length or chunked), answers its length and sha256
  GET  /slow?s=N     answers after N seconds
"""

import hashlib
import http.server
import json
import ssl
import sys
import time
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def answer(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/slow":
            seconds = float(urllib.parse.parse_qs(url.query).get("s", ["1"])[0])
            time.sleep(seconds)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.answer({"id": ID, "path": self.path, "headers": headers})

    def do_POST(self):
        digest = hashlib.sha256()
        length = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunk = self.rfile.read(size)
                digest.update(chunk)
                length += len(chunk)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length", "0"))
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                digest.update(chunk)
                length += len(chunk)
                remaining -= len(chunk)
        self.answer({"id": ID, "len": length, "sha256": digest.hexdigest(),
                     "chunked": "chunked" in self.headers.get("Transfer-Encoding", "")})


ID = sys.argv[1]
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
if len(sys.argv) == 5 and sys.argv[2] == "--tls":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()

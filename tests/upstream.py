"""A real HTTP upstream for tests (stdlib only), run as its own process.

Endpoints:
  /files/<name>?size=N   deterministic bytes, Range, ETag / If-None-Match
  /big?size=N            N bytes streamed in 64 KiB chunks with Content-Length
  /echo/<anything>       JSON description of the request it received
  /slow?delay=S          waits S seconds before answering
  /truncate?size=N       announces N bytes, sends half, closes the connection
  /garbage               answers bytes that are not HTTP
  /hugeheader?size=N     a 200 whose one header line is N bytes long
  /redirect?to=PATH      302 to PATH on this server
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK = 64 * 1024


def file_bytes(name: str, size: int) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path.startswith("/files/"):
            return self._file(path, int(q.get("size", "1000")))
        if path == "/big":
            return self._big(int(q["size"]))
        if path.startswith("/echo"):
            body = json.dumps(
                {
                    "method": self.command,
                    "path": url.path,
                    "raw_path": self.path,
                    "query": url.query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
            ).encode()
            return self._send(200, body, {"Content-Type": "application/json"})
        if path == "/slow":
            time.sleep(float(q.get("delay", "5")))
            return self._send(200, b"slow\n")
        if path == "/truncate":
            size = int(q.get("size", "100000"))
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(b"x" * (size // 2))
            self.wfile.flush()
            self.close_connection = True
            return None
        if path == "/garbage":
            self.wfile.write(b"this is not http\r\n\r\n")
            self.close_connection = True
            return None
        if path == "/hugeheader":
            self.send_response(200)
            self.send_header("X-Huge", "h" * int(q.get("size", "200000")))
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            return None
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", q["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self._send(404, b"no such thing\n")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "upstream=secret")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _file(self, path: str, size: int) -> None:
        data = file_bytes(path, size)
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        headers = {
            "ETag": etag,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if m:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else size - 1
            part = data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{start + len(part) - 1}/{size}"
            return self._send(206, part, headers)
        return self._send(200, data, headers)

    def _big(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if self.command == "HEAD":
            return
        block = b"\xab" * CHUNK
        left = size
        while left > 0:
            n = min(left, CHUNK)
            self.wfile.write(block[:n])
            left -= n


def main() -> None:
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

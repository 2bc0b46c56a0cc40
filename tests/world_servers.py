"""The test hosts of the "outside world" (run by ``tests/world.py`` inside its namespaces).

    python world_servers.py LOGDIR LABEL@ADDR@PORT@KIND ...

KIND ``shop``: a small web shop (``/`` page, ``/login`` sets a cookie, ``/check`` shows
whether the cookie came back, ``/file.bin`` is a download, ``/form?text=T`` a form whose text
field the page's script fills with T, the way a user types it); ``text``: answers every GET with
LABEL as plain text; ``tls``: reads a TLS ClientHello, records its random and key shares,
and hangs up. Every request is one JSON line in ``LOGDIR/requests.jsonl`` (``tls.jsonl``
for ClientHellos), so tests assert what really reached the server.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import secrets
import socket
import socketserver
import struct
import sys
import threading
import time
from pathlib import Path

# Page colours (the page is one colour edge to edge, so a screenshot tells which it is).
SHOP_COLOR = "#3a7d44"
OTHER_COLOR = "#7d3a6b"  # the same name, served by the other resolver's address
LOGGED_IN = "#2255cc"
LOGGED_OUT = "#cc5522"
FORM_COLOR = "#d8c040"
FILE_NAME = "report.bin"
FILE_BYTES = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(8192))

_lock = threading.Lock()
_log_dir = Path(".")
_sessions: set[str] = set()


def record(name: str, entry: dict[str, object]) -> None:
    with _lock, (_log_dir / name).open("a") as f:
        f.write(json.dumps(entry) + "\n")


def page(color: str, title: str) -> bytes:
    return (f"<!doctype html><title>{title}</title><body style='margin:0;background:{color};"
            f"height:100vh'><h1 style='margin:0;color:{color}'>{title}</h1></body>").encode()


def handler(label: str, kind: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 10

        def do_GET(self) -> None:
            cookie = self.headers.get("Cookie", "")
            record("requests.jsonl", {"server": label, "path": self.path, "cookie": cookie,
                                      "host": self.headers.get("Host", ""), "t": time.time()})
            headers: dict[str, str] = {"Content-Type": "text/html; charset=utf-8",
                                       "Cache-Control": "no-store"}
            if kind == "text":
                body, headers["Content-Type"] = label.encode(), "text/plain"
            elif self.path == "/login":
                sid = secrets.token_hex(8)
                with _lock:
                    _sessions.add(sid)
                headers["Set-Cookie"] = f"sid={sid}; Max-Age=86400; Path=/; HttpOnly"
                body = page(LOGGED_IN, "logged in")
            elif self.path == "/check":
                sids = {c.split("=", 1)[1] for c in cookie.split("; ") if c.startswith("sid=")}
                with _lock:
                    ok = bool(sids & _sessions)
                body = page(LOGGED_IN if ok else LOGGED_OUT, "in" if ok else "out")
            elif self.path.startswith("/form"):
                body = (f"<!doctype html><title>form</title><body style='margin:0;"
                        f"background:{FORM_COLOR};height:100vh'><input id=t readonly "
                        "style='font:64px monospace;margin:80px;width:1000px'><script>"
                        "t.value=new URLSearchParams(location.search).get('text');"
                        "t.blur()</script></body>").encode()
            elif self.path == "/file.bin":
                body = FILE_BYTES
                headers["Content-Type"] = "application/octet-stream"
                headers["Content-Disposition"] = f'attachment; filename="{FILE_NAME}"'
            else:
                body = page(OTHER_COLOR if label == "other" else SHOP_COLOR, label)
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def parse_client_hello(data: bytes) -> dict[str, object]:
    """The random and the key shares of a TLS ClientHello record."""
    if len(data) < 43 or data[0] != 22 or data[5] != 1:
        raise ValueError("not a ClientHello")
    body = data[9:]
    random = body[2:34]
    pos = 34
    pos += 1 + body[pos]  # session id
    pos += 2 + struct.unpack_from(">H", body, pos)[0]  # cipher suites
    pos += 1 + body[pos]  # compression methods
    end = pos + 2 + struct.unpack_from(">H", body, pos)[0]
    pos += 2
    shares: list[str] = []
    while pos + 4 <= end:
        ext, length = struct.unpack_from(">HH", body, pos)
        ext_data = body[pos + 4:pos + 4 + length]
        if ext == 51:  # key_share
            p = 2
            while p + 4 <= len(ext_data):
                group, klen = struct.unpack_from(">HH", ext_data, p)
                shares.append(f"{group}:{ext_data[p + 4:p + 4 + klen].hex()}")
                p += 4 + klen
        pos += 4 + length
    return {"random": random.hex(), "key_shares": shares}


class HelloRecorder(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(10)
        data = b""
        try:
            while len(data) < 5 or len(data) < 5 + struct.unpack_from(">H", data, 3)[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            record("tls.jsonl", parse_client_hello(data))
        except (OSError, ValueError, struct.error, IndexError) as exc:
            record("tls.jsonl", {"error": str(exc)})


class Threading(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    global _log_dir  # noqa: PLW0603
    _log_dir = Path(sys.argv[1])
    servers: list[socketserver.BaseServer] = []
    for spec in sys.argv[2:]:
        label, addr, port, kind = spec.split("@")
        server_class = Threading if kind == "tls" else http.server.ThreadingHTTPServer
        if ":" in addr:
            server_class = type("V6", (server_class,), {"address_family": socket.AF_INET6})
        servers.append(server_class((addr, int(port)),
                                    HelloRecorder if kind == "tls" else handler(label, kind)))
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    (_log_dir / f"ready-{sys.argv[2].split('@')[0]}").touch()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()

"""The egress guard without a VM, as the unprivileged user the suite runs as.

A client started in a real egress namespace (``egress_namespace``, the same as passt's)
stands in for passt: whatever it connects to, TCP or DNS, can only reach the app's guard.
The world tests (test_network.py, test_journeys.py) run the same guard with QEMU and passt.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import socket
import socketserver
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_app.core.vm.egress import EgressGuard, allowed, is_host_address
from sandbox_app.core.vm.network import egress_namespace

FORBIDDEN = ("127.0.0.1", "127.8.9.10", "0.0.0.0", "10.1.2.3", "172.16.0.1", "172.31.255.254",
             "192.168.1.1", "100.64.0.1", "100.127.255.254", "169.254.169.254", "224.0.0.251",
             "239.255.255.250", "255.255.255.255", "240.0.0.1", "::", "::1", "fe80::1",
             "fd00::1", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:192.168.1.1",
             "64:ff9b::a00:1")
LAN = ("10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.1", "100.64.0.1",
       "100.127.255.254", "169.254.169.254", "fd00::1", "fc00::1", "fe80::1",
       "::ffff:192.168.1.1", "64:ff9b::a00:1")
PUBLIC = ("1.1.1.1", "203.0.113.7", "198.51.100.1", "8.8.8.8", "2606:4700:4700::1111",
          "2001:db8::7", "::ffff:1.1.1.1", "64:ff9b::101:101")


def host_address() -> str:
    """This host's own address on its default route (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("198.51.100.1", 9))
        return str(s.getsockname()[0])


@pytest.mark.parametrize("addr", FORBIDDEN)
def test_the_guard_refuses_what_is_not_the_internet(addr: str) -> None:
    assert not allowed(ipaddress.ip_address(addr))


@pytest.mark.parametrize("addr", PUBLIC)
def test_the_guard_allows_the_internet(addr: str) -> None:
    assert allowed(ipaddress.ip_address(addr))
    assert allowed(ipaddress.ip_address(addr), lan=True)


@pytest.mark.parametrize("addr", FORBIDDEN)
def test_internet_lan_allows_the_lan_and_nothing_more(addr: str) -> None:
    assert allowed(ipaddress.ip_address(addr), lan=True) is (addr in LAN)


def test_the_hosts_own_addresses_are_refused_even_when_public_looking() -> None:
    own = ipaddress.ip_address(host_address())
    assert is_host_address(own) and is_host_address(ipaddress.ip_address("127.0.0.1"))
    assert not allowed(own) and not allowed(own, lan=True)
    assert not is_host_address(ipaddress.ip_address("203.0.113.7"))


# ------------------------------------------------------------------ through a real namespace

CLIENT = r"""
import json, socket, sys
out, targets = sys.argv[1], json.loads(sys.argv[2])
results = {}
for name, host, port, payload in targets:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as c:
            c.settimeout(10)
            c.connect((host, port))
            c.sendall(bytes(range(256)) * int(payload[4:]) if payload.startswith("gen:")
                      else bytes.fromhex(payload))
            c.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := c.recv(1 << 16):
                data += chunk
        results[name] = data.hex() if len(data) < 64 else f"{len(data)}:" + __import__(
            "hashlib").sha256(data).hexdigest()
    except OSError as e:
        results[name] = f"error {type(e).__name__}"
for name, server in (("dns", "10.0.2.2"), ("dns6", "fd00:b5::1"), ("udp", "203.0.113.9")):
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as u:
        u.settimeout(3)
        port = 123 if name == "udp" else 53
        try:
            u.sendto(b"\x12\x34" + b"\x01\x00" + b"\x00" * 8 + b"query", (server, port))
            results[name] = u.recv(512).hex()
        except OSError as e:
            results[name] = f"error {type(e).__name__}"
open(out, "w").write(json.dumps(results))
"""


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while chunk := self.request.recv(1 << 16):
            data += chunk
        self.request.sendall(data[::-1])


@pytest.fixture
def echo() -> Iterator[int]:
    """A TCP server on this host's own address (where the guard must not let anything in)."""
    server = socketserver.ThreadingTCPServer((host_address(), 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def resolver() -> Iterator[tuple[int, list[bytes]]]:
    """A stand-in DNS server on loopback: answers every query with its id and "answer"."""
    seen: list[bytes] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            seen.append(query)
            sock.sendto(query[:2] + b"answer", peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield sock.getsockname()[1], seen
    stop.set()
    t.join()
    sock.close()


def _through_the_namespace(tmp_path: Path, targets: list[tuple[str, str, int, bytes | str]],
                           guard_args: dict[str, object]) -> tuple[dict[str, str], EgressGuard]:
    out = tmp_path / "results.json"
    spec = json.dumps([(n, h, p, payload if isinstance(payload, str) else payload.hex())
                       for n, h, p, payload in targets])

    async def run() -> EgressGuard:
        proc, fds = await egress_namespace([sys.executable, "-I", "-c", CLIENT, str(out), spec])
        guard = EgressGuard([socket.socket(fileno=fd) for fd in fds], **guard_args)  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), 90)
        finally:
            guard.close()
        return guard

    guard = asyncio.run(run())
    return json.loads(out.read_text()), guard


def test_nothing_leaves_the_namespace_but_through_the_guard(
        tmp_path: Path, echo: int, resolver: tuple[int, list[bytes]]) -> None:
    dns_port, queries = resolver
    r, guard = _through_the_namespace(tmp_path, [
        ("loopback", "127.0.0.1", echo, b"hello"),
        ("host", host_address(), echo, b"hello"),
        ("lan", "192.168.77.1", 80, b"GET /"),
        ("metadata", "169.254.169.254", 80, b"GET /"),
        ("ula", "fd00:1::1", 80, b"GET /"),
    ], {"lan": False, "resolvers": ["127.0.0.1"], "dns_port": dns_port})
    assert all(r[k].startswith("error") or r[k] == "" for k in
               ("loopback", "host", "lan", "metadata", "ula")), r
    assert {"192.168.77.1:80", "169.254.169.254:80", "fd00:1::1:80"} <= set(guard.stats.refused)
    assert guard.stats.connections == 0
    # DNS, IPv4 and IPv6, reaches the context's resolver (and only it); other UDP nothing.
    assert bytes.fromhex(r["dns"]) == b"\x12\x34answer" == bytes.fromhex(r["dns6"]), r
    assert len(queries) == 2 and queries[0].endswith(b"query")
    assert r["udp"] in ("error PermissionError", "error TimeoutError"), r  # dropped


def test_the_guard_relays_both_ways(tmp_path: Path, echo: int) -> None:
    """The relay itself, with a policy that lets this host's own address in (for the test
    only): the original destination is kept and 4 MiB go through intact, both ways."""
    big = bytes(range(256)) * (4 * 4096)
    own = host_address()
    r, guard = _through_the_namespace(tmp_path, [
        ("small", own, echo, b"hello"), ("big", own, echo, f"gen:{len(big) // 256}"),
    ], {"lan": False, "resolvers": [], "allow": lambda addr, lan: str(addr) == own})
    assert r["small"] == b"olleh".hex(), r
    assert r["big"] == f"{len(big)}:{hashlib.sha256(big[::-1]).hexdigest()}", r
    assert guard.stats.connections == 2

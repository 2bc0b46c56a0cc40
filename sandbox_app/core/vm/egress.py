"""The egress guard: the guest reaches the public internet, and nothing of this host or its LAN.

Needs no privilege. passt (the guest's user-mode network) runs in a network namespace of
its own (``egress_ns.py``, in an unprivileged user namespace) whose only way out is this
guard: nftables there redirects every TCP connection and every DNS query to sockets the app
holds. For each connection the guard reads where the guest wanted to go
(``SO_ORIGINAL_DST``) and connects there from the host itself — only if the address is
allowed (``allowed``): never loopback, this host's own addresses on any interface,
multicast, unspecified or reserved addresses; RFC 1918, CGNAT 100.64/10, link-local and ULA
only for ``internet+lan``. The check is on the address actually connected to, after any DNS
answer, so a name that resolves to a private address (rebinding) is refused just the same.
DNS queries go to the context's resolvers (or the host's) and nowhere else; any other UDP
(QUIC, WebRTC, NTP) and ICMP is dropped in the namespace.

The guard runs its own asyncio loop in a thread: moving bytes never competes with the GUI.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same number
_CONNECT_TIMEOUT_S = 15.0
_DNS_TIMEOUT_S = 3.0
_BUFFER = 256 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NEVER = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4",  # 240/4 holds 255.255.255.255
    "::/128", "::1/128", "ff00::/8",
))
_LAN = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
    "fc00::/7", "fe80::/10",
))


def _embedded_v4(addr: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or NAT64 (64:ff9b::/96) IPv6 address."""
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr in ipaddress.ip_network("64:ff9b::/96"):
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def is_host_address(addr: IPAddress) -> bool:
    """Is ``addr`` one of this host's own addresses (on any interface)?

    Binding succeeds only to a local address: asking the kernel is exact and race-free where
    a list of interfaces would go stale.
    """
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(addr), 0))
        except OSError:
            return False
    return True


def allowed(addr: IPAddress, *, lan: bool = False) -> bool:
    """May the guest connect to ``addr``? (``lan``: the context allows its LAN.)"""
    addr = _embedded_v4(addr)
    if any(addr in n for n in _NEVER):
        return False
    if not lan and any(addr in n for n in _LAN):
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        return False
    return not is_host_address(addr)


def original_destination(sock: socket.socket) -> tuple[IPAddress, int]:
    """Where a redirected connection was going before nftables sent it to us."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, _SO_ORIGINAL_DST, 28)
        port, host = struct.unpack_from("!H", raw, 2)[0], raw[8:24]
        return ipaddress.IPv6Address(host), port
    raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
    return ipaddress.IPv4Address(raw[4:8]), struct.unpack_from("!H", raw, 2)[0]


def host_resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's DNS servers, as its resolver library would use them."""
    servers = []
    with contextlib.suppress(OSError):
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                servers.append(parts[1].split("%")[0])
    return servers or ["127.0.0.1"]


@dataclass
class GuardStats:
    connections: int = 0
    refused: list[str] = field(default_factory=list)  # "ADDR:PORT" (most recent 100)
    dns_queries: int = 0


class EgressGuard:
    """The app's side of the egress namespace: a TCP relay and a DNS forwarder."""

    def __init__(self, sockets: Sequence[socket.socket], *, lan: bool,
                 resolvers: Sequence[str], dns_port: int = 53,
                 allow: Callable[[IPAddress, bool], bool] | None = None) -> None:
        self.lan = lan
        self.resolvers = list(resolvers)
        self.dns_port = dns_port
        self._allow = allow or (lambda addr, lan: allowed(addr, lan=lan))
        self.stats = GuardStats()
        self._sockets = list(sockets)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="egress-guard", daemon=True)
        self._failed: BaseException | None = None
        self._thread.start()
        self._ready.wait()
        if self._failed is not None:
            self.close()
            raise self._failed

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # raised again in __init__
            self._failed = e
        finally:
            self._ready.set()
        if self._failed is None:
            self._loop.run_forever()
        # Closing: end every relay, then the loop.
        tasks = asyncio.all_tasks(self._loop)
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _serve(self) -> None:
        for s in self._sockets:
            s.setblocking(False)
            if s.type == socket.SOCK_STREAM:
                await asyncio.start_server(self._relay, sock=s, limit=_BUFFER)
            else:
                await self._loop.create_datagram_endpoint(
                    functools.partial(_DnsForwarder, self), sock=s)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        for s in self._sockets:
            s.close()

    def _refuse(self, where: str) -> None:
        self.stats.refused = [*self.stats.refused[-99:], where]
        log.info("egress guard refused a connection to %s", where)

    async def _relay(self, g_reader: asyncio.StreamReader,
                     g_writer: asyncio.StreamWriter) -> None:
        try:
            sock = g_writer.get_extra_info("socket")
            addr, port = original_destination(sock)
            if not self._allow(addr, self.lan):
                self._refuse(f"{addr}:{port}")
                return
            self.stats.connections += 1
            try:
                o_reader, o_writer = await asyncio.wait_for(
                    asyncio.open_connection(str(addr), port, limit=_BUFFER), _CONNECT_TIMEOUT_S)
            except (TimeoutError, OSError):
                return  # the guest sees its connection closed, as with an unreachable host
            try:
                await asyncio.gather(_pump(g_reader, o_writer), _pump(o_reader, g_writer))
            finally:
                o_writer.close()
        except OSError:
            pass
        finally:
            g_writer.close()

    async def resolve(self, query: bytes) -> bytes | None:
        """Forward one DNS query to the resolvers in turn; the first answer wins."""
        self.stats.dns_queries += 1
        for server in self.resolvers:
            try:
                return await asyncio.wait_for(_udp_exchange(server, self.dns_port, query),
                                              _DNS_TIMEOUT_S)
            except (TimeoutError, OSError):
                continue
        return None


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


class _Once(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def _udp_exchange(server: str, port: int, query: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Once, remote_addr=(server, port))
    try:
        transport.sendto(query)
        while True:  # an answer must carry the query's id
            answer = await proto.answer
            if answer[:2] == query[:2]:
                return answer
            proto.answer = loop.create_future()
    finally:
        transport.close()


class _DnsForwarder(asyncio.DatagramProtocol):
    def __init__(self, guard: EgressGuard) -> None:
        self.guard = guard
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _answer(self, query: bytes, addr: tuple[str, int]) -> None:
        answer = await self.guard.resolve(query)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)

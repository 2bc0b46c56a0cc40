"""Network policy of a session: ``internet`` through passt, or ``none``.

``internet`` uses passt (user-mode networking, no privileges) connected to QEMU by a
socketpair — no socket file, no listener. ``--no-map-gw`` stops the guest's gateway address
from reaching the host's loopback services. passt alone would still let the guest connect to
the host's *other* addresses (LAN IP, docker bridge…), so passt runs as a dedicated user and,
where we may (root), an nftables rule rejects that user's traffic to any address local to
this host (``fib daddr type local``). Without that rule we warn.

``none`` keeps the NIC (the device model must match the snapshot) with a backend that leads
nowhere: a hub with one port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import BlankSlateError
from .process import set_pdeathsig

NET_USER = "blankslate-net"
_NFT_TABLE = "blankslate"

NO_HOST_RULE_WARNING = (
    "no firewall rule protects this host's own addresses from the guest (needs root and "
    "nftables): the guest cannot reach loopback services, but can reach services listening "
    "on this host's other addresses"
)


def _net_uid() -> int | None:
    try:
        return pwd.getpwnam(NET_USER).pw_uid
    except KeyError:
        return None


def host_guard_active() -> bool:
    """Is the nftables rule that keeps passt's user off this host's addresses in place?"""
    uid = _net_uid()
    if uid is None or not shutil.which("nft"):
        return False
    out = subprocess.run(["nft", "list", "table", "inet", _NFT_TABLE], capture_output=True,
                         text=True, check=False).stdout
    return f"skuid {uid}" in out or f"skuid {NET_USER}" in out


def install_host_guard() -> bool:
    """(root) Create the passt user and the nftables rule; idempotent. True if active."""
    if os.geteuid() != 0 or not shutil.which("nft"):
        return False
    if _net_uid() is None:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", NET_USER], check=False, capture_output=True)
    uid = _net_uid()
    if uid is None:
        return False
    if not host_guard_active():
        rules = (
            f"table inet {_NFT_TABLE} {{\n"
            "  chain output {\n"
            "    type filter hook output priority 0; policy accept;\n"
            f"    meta skuid {uid} fib daddr type local reject\n"
            "  }\n"
            "}\n"
        )
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=False,
                       capture_output=True)
    return host_guard_active()


@dataclass
class NetworkBackend:
    """What QEMU gets for ``-netdev``, and the helper process behind it (if any)."""

    netdev: list[str]
    inherit_fds: list[int] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    warnings: list[str] = field(default_factory=list)

    async def close(self) -> None:
        for fd in self.inherit_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.inherit_fds = []
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await asyncio.to_thread(self.process.wait)


def no_network() -> NetworkBackend:
    return NetworkBackend(["hubport", "id=net0", "hubid=0"])


async def internet(dns: Sequence[str] = ()) -> NetworkBackend:
    """Start passt on one end of a socketpair; QEMU gets the other end.

    ``dns``: the resolvers passt's DHCP hands the guest (empty: the host's own).
    """
    passt = shutil.which("passt")
    if passt is None:
        raise BlankSlateError("passt not found: install the Debian package 'passt' "
                              "(or set the context's network to 'none')")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    argv = [passt, "--foreground", "--quiet", "--no-map-gw", "--fd", str(ours.fileno())]
    for server in dns:
        argv += ["--dns", server]
    warnings = []
    if os.geteuid() == 0:
        if install_host_guard():
            argv += ["--runas", NET_USER]
        else:
            warnings.append(NO_HOST_RULE_WARNING)
    elif not host_guard_active():
        warnings.append(NO_HOST_RULE_WARNING)
    try:
        # A plain Popen: passt re-execs itself when dropping privileges, which confuses
        # asyncio's child watcher.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=[ours.fileno()],
            preexec_fn=set_pdeathsig,  # noqa: PLW1509  (started from the event loop thread)
        )
    finally:
        ours.close()
    fd = theirs.detach()
    return NetworkBackend(["stream", "id=net0", "server=off", "addr.type=fd", f"addr.str={fd}"],
                          [fd], proc, warnings)

"""Network policy of a session: ``internet`` (or ``internet+lan``) through the egress
guard, or ``none``.

``internet`` uses passt (user-mode networking, no privileges) connected to QEMU by a
socketpair — no socket file, no listener. passt runs in a network namespace of its own whose
only way out is the app's egress guard (``egress.py``): the guest reaches the public
internet, never this host, its LAN, link-local or multicast addresses (the LAN only with
``internet+lan``). No root, no firewall rule on the host.

``none`` keeps the NIC (the device model must match the snapshot) with a backend that leads
nowhere: a hub with one port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BlankSlateError
from .egress import EgressGuard, host_resolvers
from .process import helper_popen_kwargs


@dataclass
class NetworkBackend:
    """What QEMU gets for ``-netdev``, and the helper process behind it (if any)."""

    netdev: list[str]
    inherit_fds: list[int] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    warnings: list[str] = field(default_factory=list)
    guard: EgressGuard | None = None

    async def close(self) -> None:
        if self.guard is not None:
            await asyncio.to_thread(self.guard.close)
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


GUEST_ADDRESS, GUEST_PREFIX, GATEWAY = "10.0.2.15", 24, "10.0.2.2"
GUEST_ADDRESS6, GATEWAY6 = "fd00:b5::15", "fd00:b5::1"
_NS_SCRIPT = Path(__file__).with_name("egress_ns.py")


async def egress_namespace(command: list[str], pass_fds: Sequence[int] = ()
                           ) -> tuple[subprocess.Popen[bytes], list[int]]:
    """Start ``command`` in a new egress namespace (``egress_ns.py``); return the process
    and the four sockets (TCP and DNS, IPv4 and IPv6) the guard serves."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise BlankSlateError("unshare not found: install the Debian package 'util-linux'")
    ctrl, ctrl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    argv = [unshare, "--user", "--map-root-user", "--net", "--",
            sys.executable, "-I", "-S", str(_NS_SCRIPT), str(ctrl_child.fileno()), "--",
            *command]
    try:
        # A plain Popen: passt re-execs itself when dropping privileges, which confuses
        # asyncio's child watcher.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=[*pass_fds, ctrl_child.fileno()],
            **helper_popen_kwargs(),  # dies with us, no core; under root: not root
        )
    finally:
        ctrl_child.close()
    try:
        msg, fds, _, _ = await asyncio.to_thread(socket.recv_fds, ctrl, 1024, 4)
    finally:
        ctrl.close()
    if msg != b"ok" or len(fds) != 4:
        for fd in fds:
            os.close(fd)
        proc.kill()
        await asyncio.to_thread(proc.wait)
        raise BlankSlateError(msg.decode(errors="replace").strip()
                              or "the egress namespace did not start (are unprivileged user "
                                 "namespaces disabled?)")
    return proc, fds


async def internet(dns: Sequence[str] = (), *, lan: bool = False) -> NetworkBackend:
    """passt in the egress namespace on one end of a socketpair; QEMU gets the other end.

    ``dns``: the resolvers the guard forwards the guest's queries to (empty: the host's
    own). ``lan``: the guard lets the guest reach the LAN (never this host itself).
    """
    passt = shutil.which("passt")
    if passt is None:
        raise BlankSlateError("passt not found: install the Debian package 'passt' "
                              "(or set the context's network to 'none')")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # The guest's address and gateway are fixed: the namespace holds no address of the
        # host's, and the gateway leads only to the guard. Its resolver is the gateway.
        proc, fds = await egress_namespace(
            [passt, "--foreground", "--quiet", "--fd", str(ours.fileno()),
             "--address", GUEST_ADDRESS, "--netmask", str(GUEST_PREFIX),
             "--gateway", GATEWAY, "--dns", GATEWAY,
             "--address", GUEST_ADDRESS6, "--gateway", GATEWAY6], pass_fds=[ours.fileno()])
    except BaseException:
        theirs.close()
        raise
    finally:
        ours.close()
    guard = EgressGuard([socket.socket(fileno=fd) for fd in fds], lan=lan,
                        resolvers=list(dns) or host_resolvers())
    fd = theirs.detach()
    return NetworkBackend(["stream", "id=net0", "server=off", "addr.type=fd", f"addr.str={fd}"],
                          [fd], proc, guard=guard)

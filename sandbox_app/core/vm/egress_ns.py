"""Run as a script inside ``unshare --user --map-root-user --net``: the egress namespace.

Nothing leaves this network namespace but through the app: every TCP connection (any
address, IPv4 and IPv6) is redirected by nftables to a listener whose socket this script
hands to the app, and every DNS query (UDP port 53) to a datagram socket likewise; all other
traffic is dropped. Then it becomes passt, which connects the guest to this namespace.

    python3 -I -S egress_ns.py CTRL_FD -- PASST_ARGV...

It sends the app four sockets over CTRL_FD (TCP IPv4, TCP IPv6, UDP IPv4, UDP IPv6, all
bound to the namespace's own address) with the message ``ok``, or a one-line error and exits 1.
Standard library only: it starts in ~30 ms and imports nothing from the app.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys

TCP_PORT, DNS_PORT = 1080, 1053
# This namespace's own address, where the guard's sockets are; no guest traffic ends here.
NS4, NS6 = "10.0.2.2", "fd00:b5::2"

RULES = f"""
table inet blankslate {{
    chain to_guard {{
        type nat hook output priority -100; policy accept;
        meta nfproto ipv4 meta l4proto tcp dnat ip to {NS4}:{TCP_PORT}
        meta nfproto ipv6 meta l4proto tcp dnat ip6 to [{NS6}]:{TCP_PORT}
        meta nfproto ipv4 udp dport 53 dnat ip to {NS4}:{DNS_PORT}
        meta nfproto ipv6 udp dport 53 dnat ip6 to [{NS6}]:{DNS_PORT}
    }}
    chain nothing_else {{
        type filter hook output priority 0; policy drop;
        oif lo accept
        ip daddr {NS4} accept
        ip6 daddr {NS6} accept
    }}
}}
"""


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise OSError(f"{name} not found (Debian packages iproute2 and nftables)")
    return path


def _run(*argv: str, stdin: str | None = None) -> None:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0]
        raise OSError(f"{' '.join(argv[:4])}: {why}")


def _setup() -> list[socket.socket]:
    ip = _tool("ip")
    _run(ip, "link", "set", "lo", "up")
    _run(ip, "link", "add", "bs0", "type", "veth", "peer", "name", "bs1")
    _run(ip, "link", "set", "bs1", "up")
    _run(ip, "link", "set", "bs0", "up")
    _run(ip, "addr", "add", f"{NS4}/24", "dev", "bs0")
    _run(ip, "-6", "addr", "add", f"{NS6}/64", "dev", "bs0", "nodad")
    _run(ip, "route", "add", "default", "dev", "bs0")
    _run(ip, "-6", "route", "add", "default", "dev", "bs0")
    _run(_tool("nft"), "-f", "-", stdin=RULES)
    socks = []
    for family, kind, host, port in ((socket.AF_INET, socket.SOCK_STREAM, NS4, TCP_PORT),
                                     (socket.AF_INET6, socket.SOCK_STREAM, NS6, TCP_PORT),
                                     (socket.AF_INET, socket.SOCK_DGRAM, NS4, DNS_PORT),
                                     (socket.AF_INET6, socket.SOCK_DGRAM, NS6, DNS_PORT)):
        s = socket.socket(family, kind)
        s.bind((host, port))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
        socks.append(s)
    return socks


def main(argv: list[str]) -> int:
    # unshare changed our credentials, which cleared the parent-death signal: set it again.
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    ctrl = socket.socket(fileno=int(argv[1]))
    passt = argv[argv.index("--") + 1:]
    try:
        socks = _setup()
    except OSError as e:
        ctrl.sendall(f"egress namespace: {e}".encode()[:500])
        return 1
    socket.send_fds(ctrl, [b"ok"], [s.fileno() for s in socks])
    ctrl.close()
    for s in socks:
        s.close()
    os.execv(passt[0], passt)  # noqa: S606  (argv from the app, no shell)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""A small "outside world" in network namespaces the tests create (root only; nothing
leaves this machine), and the way to run the app in it as the unprivileged test user.

The "internet" uses documentation ranges (203.0.113.0/24, 2001:db8:213::/64): public as
far as the egress guard can tell, and routed nowhere but here.

    netns bs-host  (the user's machine: blankslate, passt and QEMU run here)
        lo: a "host-only" web server on 127.0.0.1:8081
        veth bs-h 203.0.113.1/24 and 203.0.113.3/24: a web server on 203.0.113.3:8082 (one
            of the host's own addresses); 10.213.0.1/24 (the host's LAN address);
            2001:db8:213::1/64 and fd00:213::1/64
        default routes via 203.0.113.2 and 2001:db8:213::2; 169.254.169.254 on the link;
        /etc/resolv.conf (ip netns exec's bind mount of /etc/netns/bs-host/resolv.conf)
        names 203.0.113.2
    netns bs-web   (the internet, and the LAN)
        veth bs-w 203.0.113.2/24: DNS (dnsmasq: shop.test and tls.test → 203.0.113.2;
            lan.test → 10.213.0.2, a name pointing into the LAN), the shop on :80, a TLS
            ClientHello recorder on :443, a plain server on :8080
        2001:db8:213::2/64: the shop over IPv6 only (shop-v6.test)
        203.0.113.4: another resolver (dnsmasq: shop.test → 203.0.113.5)
        203.0.113.5: the same shop, another colour (shows which resolver was used)
        10.213.0.2/24: a printer's page on :8083 (the LAN); fd00:213::2: one on :8084 (ULA)
        169.254.169.254: a cloud metadata service on :80
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST, WEB = "bs-host", "bs-web"
SERVERS = Path(__file__).with_name("world_servers.py")
RESOLV = Path("/etc/netns") / HOST / "resolv.conf"
# A normal user's PATH on Debian: /usr/sbin and /sbin are not on it.
USER_PATH = "/usr/local/bin:/usr/bin:/bin"


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@dataclass
class World:
    logs: Path

    def requests(self, server: str | None = None) -> list[dict[str, str]]:
        """What reached the web servers so far (optionally one server's), favicons aside."""
        return [r for r in self._read("requests.jsonl")
                if server in (None, r["server"]) and r["path"] != "/favicon.ico"]

    def hellos(self) -> list[dict[str, object]]:
        return self._read("tls.jsonl")

    def _read(self, name: str) -> list[dict]:  # type: ignore[type-arg]
        path = self.logs / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


def unprivileged_user() -> pwd.struct_passwd | None:
    """The unprivileged user the app runs as under a root test run (run_suite.py sets it)."""
    name = os.environ.get("BLANKSLATE_TEST_USER")
    if os.geteuid() != 0 or not name:
        return None
    return pwd.getpwnam(name)


def as_user(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """``argv`` run as the test user (when we are root), with a normal user's environment."""
    user = unprivileged_user()
    if user is None:
        return argv, env
    env = {**env, "HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name,
           "PATH": USER_PATH}
    env.pop("XDG_RUNTIME_DIR", None)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
            "--inh-caps=-all", *argv], env


def user_dir(prefix: str) -> Path:
    """A fresh directory the test user owns (under /tmp: short socket paths)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    user = unprivileged_user()
    if user is not None:
        os.chown(d, user.pw_uid, user.pw_gid)
    return d


def run_in_host(argv: list[str], env: dict[str, str], timeout: float = 300,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the host namespace as the test user."""
    argv, env = as_user(argv, env)
    return subprocess.run(["ip", "netns", "exec", HOST, *argv], capture_output=True,
                          text=True, timeout=timeout, check=False, env=env, input=input,
                          cwd="/")


def _start(ns: str, argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _dnsmasq(addr: str, names: dict[str, str], logs: Path) -> list[str]:
    log = logs / f"dns-{addr}.log"
    return ["dnsmasq", "--log-queries", f"--log-facility={log}", "--keep-in-foreground",
            "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
            f"--listen-address={addr}", "--pid-file=", "--user=nobody", "--group=nogroup",
            *(f"--address=/{name}/{ip}" for name, ip in names.items())]


def make_world() -> Iterator[World]:
    for ns in (HOST, WEB):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        _sh("ip", "netns", "add", ns)
    _sh("ip", "link", "add", "bs-h", "netns", HOST, "type", "veth", "peer", "bs-w",
        "netns", WEB)
    for ns, dev, addrs in ((HOST, "bs-h", ("203.0.113.1/24", "203.0.113.3/24", "10.213.0.1/24",
                                           "2001:db8:213::1/64", "fd00:213::1/64")),
                           (WEB, "bs-w", ("203.0.113.2/24", "203.0.113.4/24", "203.0.113.5/24",
                                          "10.213.0.2/24", "169.254.169.254/32",
                                          "2001:db8:213::2/64", "fd00:213::2/64"))):
        for addr in addrs:
            _sh("ip", "-n", ns, "addr", "add", addr, "dev", dev, *(
                ["nodad"] if ":" in addr else []))
        _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
    _sh("ip", "-n", HOST, "route", "add", "default", "via", "203.0.113.2")
    _sh("ip", "-n", HOST, "route", "add", "169.254.169.254/32", "dev", "bs-h")
    _sh("ip", "-n", HOST, "-6", "route", "add", "default", "via", "2001:db8:213::2")
    RESOLV.parent.mkdir(parents=True, exist_ok=True)
    RESOLV.write_text("nameserver 203.0.113.2\n")
    logs = Path(tempfile.mkdtemp(prefix="bs-world-"))
    py = [sys.executable, str(SERVERS), str(logs)]
    procs = [
        _start(WEB, [*py, "shop@203.0.113.2@80@shop", "other@203.0.113.5@80@shop",
                     "shop6@2001:db8:213::2@80@shop", "outside@203.0.113.2@8080@text",
                     "tls@203.0.113.2@443@tls", "lan@10.213.0.2@8083@text",
                     "ula@fd00:213::2@8084@text", "metadata@169.254.169.254@80@text"]),
        _start(HOST, [*py, "host-loopback@127.0.0.1@8081@text",
                      "host-address@203.0.113.3@8082@text"]),
        _start(WEB, _dnsmasq("203.0.113.2", {"shop.test": "203.0.113.2",
                                             "tls.test": "203.0.113.2",
                                             "lan.test": "10.213.0.2",
                                             "shop-v6.test": "2001:db8:213::2"}, logs)),
        _start(WEB, _dnsmasq("203.0.113.4", {"shop.test": "203.0.113.5"}, logs)),
    ]
    deadline = time.monotonic() + 20
    while not ((logs / "ready-shop").exists() and (logs / "ready-host-loopback").exists()):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("the test world's servers did not start")
        time.sleep(0.1)
    try:
        yield World(logs)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for ns in (HOST, WEB):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(RESOLV.parent, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)

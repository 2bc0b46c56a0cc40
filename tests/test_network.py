"""Network policy against real QEMU + passt, inside network namespaces the test creates.

Topology (all of it ours, nothing leaves this machine):

    netns bs-host  (blankslate, passt and QEMU run here)
        lo: a "host-only" web server on 127.0.0.1:8081
        veth bs-h 10.213.0.1/24 and 10.213.0.3/24: a web server on 10.213.0.3:8082 (one of
            the host's own addresses; passt gives the guest 10.213.0.1 itself)
        default route via 10.213.0.2
    netns bs-web   (the "outside world")
        veth bs-w 10.213.0.2/24: a web server on 10.213.0.2:8080, and nothing on 8081

With ``internet``, the guest reaches 10.213.0.2:8080, but not the host's loopback through its
gateway (passt --no-map-gw: 10.213.0.2:8081 is refused) and not the host's own address
(nftables rule on passt's user). With ``none`` it reaches nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers import REPO

from sandbox_app.core.contexts import ContextStore, Network, Profile
from sandbox_app.core.paths import Paths

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("passt"),
    reason="needs root, iproute2 and passt",
)

HOST, WEB = "bs-host", "bs-web"


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def namespaces() -> Iterator[None]:
    for ns in (HOST, WEB):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        _sh("ip", "netns", "add", ns)
    _sh("ip", "link", "add", "bs-h", "netns", HOST, "type", "veth", "peer", "bs-w",
        "netns", WEB)
    for ns, dev, addr in ((HOST, "bs-h", "10.213.0.1/24"), (WEB, "bs-w", "10.213.0.2/24")):
        _sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
        _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh("ip", "-n", ns, "link", "set", "lo", "up")
    _sh("ip", "-n", HOST, "addr", "add", "10.213.0.3/24", "dev", "bs-h")
    _sh("ip", "-n", HOST, "route", "add", "default", "via", "10.213.0.2")
    servers = []
    for ns, addr, port, text in ((WEB, "10.213.0.2", 8080, "outside"),
                                 (HOST, "127.0.0.1", 8081, "host-loopback"),
                                 (HOST, "10.213.0.3", 8082, "host-address")):
        code = (
            "import http.server as h\n"
            "class H(h.BaseHTTPRequestHandler):\n"
            "    timeout = 10\n"
            "    def do_GET(self):\n"
            f"        self.send_response(200); self.end_headers(); self.wfile.write(b'{text}')\n"
            "    def log_message(self, *a): pass\n"
            f"h.ThreadingHTTPServer(('{addr}', {port}), H).serve_forever()\n"
        )
        servers.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code]))
    yield
    for s in servers:
        s.kill()
        s.wait()
    for ns in (HOST, WEB):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


# busybox-static's wget crashes in glibc's static resolver; nc speaks enough HTTP. Each
# target gets three tries of 5 s: about one TCP connection in twenty through Debian 12's
# passt stalls here (with or without the nftables guard, after a cold boot too), and a
# blocked target must fail every time anyway.
GUEST_PROBE = (
    "ifconfig eth0 up; udhcpc -n -q -t 3 -i eth0 -s /etc/udhcpc.script >/dev/null 2>&1; "
    "gw=$(ip route | awk '/default/ {print $3}'); "
    "for t in 10.213.0.2:8080 $gw:8081 10.213.0.3:8082; do body=; "
    "  for try in 1 2 3; do "
    "    body=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc ${t%:*} ${t#*:} "
    "    2>/dev/null | tail -1); [ -n \"$body\" ] && break; done; "
    "  echo \"$t ${body:-FAIL}\"; done"
)


def _probe(tiny_paths: Paths, network: Network) -> dict[str, str]:
    ContextStore(tiny_paths).create(Profile(name=f"n-{network.value}", image="tiny",
                                            network=network))
    proc = subprocess.run(
        ["ip", "netns", "exec", HOST, sys.executable, "-m", "sandbox_app", "run",
         f"n-{network.value}", "--headless", "--json", "--exec", GUEST_PROBE],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["exec"][0]["stdout"]
    results = {}
    for line in out.splitlines():
        target, _, answer = line.partition(" ")
        results[target.rsplit(":", 1)[1]] = answer
    return results


def test_internet_reaches_the_outside_but_not_the_host(namespaces: None,
                                                       tiny_paths: Paths) -> None:
    r = _probe(tiny_paths, Network.INTERNET)
    assert r["8080"] == "outside"
    assert r["8081"] == "FAIL"  # the host's loopback, through the gateway address
    assert r["8082"] == "FAIL"  # the host's own address


def test_none_reaches_nothing(namespaces: None, tiny_paths: Paths) -> None:
    r = _probe(tiny_paths, Network.NONE)
    assert r == {"8080": "FAIL", "8081": "FAIL", "8082": "FAIL"}

"""Network policy against real QEMU + passt + the egress guard, in the test world's
namespaces (tests/world.py). The app runs as the unprivileged test user: the guard needs no
privilege.

The tiny guest runs no DHCP client of its own: the lease it uses is the one the app applies
after the restore (the image's ``network_command``), as in the browser image.

With ``internet`` the guest reaches the outside (203.0.113.2:8080, and its name server
through the guard), but not the host's loopback through its gateway, not the host's own
address (203.0.113.3), not the LAN (10.213.0.2, fd00:213::2: RFC 1918, ULA) and not the
cloud metadata address 169.254.169.254. ``internet+lan`` adds the LAN, never the host.
With ``none`` it reaches nothing.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from world import World, run_in_host

pytestmark = pytest.mark.root

# busybox-static's wget crashes in glibc's static resolver; nc speaks enough HTTP. Each
# target gets three tries of 5 s: about one TCP connection in twenty through Debian 12's
# passt stalls (cold boot too). Names are resolved by busybox's own nslookup.
TARGETS = ("outside=203.0.113.2:8080", "gateway=$gw:8081", "host=203.0.113.3:8082",
           "lan=10.213.0.2:8083", "ula=fd00:213::2:8084", "metadata=169.254.169.254:80")
GUEST_PROBE = (
    "gw=$(ip route | awk '/default/ {print $3}'); echo \"gw ${gw:-none}\"; "
    "echo \"dns $(nslookup shop.test 2>/dev/null | awk '/^Address/ {a=$NF} END {print a}')\"; "
    f"for t in {' '.join(TARGETS)}; do name=${{t%%=*}}; t=${{t#*=}}; body=; "
    "  for try in 1 2 3; do "
    "    body=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc ${t%:*} ${t##*:} "
    "    2>/dev/null | tail -1); [ -n \"$body\" ] && break; done; "
    "  echo \"$name ${body:-FAIL}\"; done"
)


def _probe(home: Path, network: str) -> dict[str, str]:
    env = {"BLANKSLATE_HOME": str(home), "BLANKSLATE_ACCEL": "tcg", "BLANKSLATE_KEYRING": "off"}
    bs = [sys.executable, "-m", "sandbox_app"]
    name = "n-" + network.replace("+", "-")
    made = run_in_host([*bs, "context", "create", name, "--image", "tiny",
                        "--network", network], env)
    assert made.returncode == 0, made.stderr
    proc = run_in_host([*bs, "run", name, "--headless", "--json", "--exec", GUEST_PROBE],
                       env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["exec"][0]["stdout"]
    return dict(line.partition(" ")[::2] for line in out.splitlines())


def _once(body: str, label: str) -> bool:
    # The body, once; Debian 12's passt (2023-03) has been seen once to deliver it twice in
    # one stream ("outsideoutside"), a defect in its TCP path, not in the guard.
    return re.fullmatch(f"({label})+", body) is not None


def test_internet_reaches_the_outside_but_not_the_host_or_the_lan(
        world: World, user_home: Path) -> None:
    r = _probe(user_home, "internet")
    assert r["gw"] == "10.0.2.2"  # the lease the app applied after the restore
    assert r["dns"] == "203.0.113.2", r  # the host's resolver, through the guard
    assert _once(r["outside"], "outside"), r
    assert r["gateway"] == "FAIL", r  # the host's loopback, through the gateway address
    assert r["host"] == "FAIL", r  # the host's own address
    assert r["lan"] == "FAIL" and r["ula"] == "FAIL", r
    assert r["metadata"] == "FAIL", r


def test_internet_lan_reaches_the_lan_but_not_the_host(world: World, user_home: Path) -> None:
    r = _probe(user_home, "internet+lan")
    assert _once(r["outside"], "outside") and _once(r["lan"], "lan"), r
    assert _once(r["ula"], "ula") and _once(r["metadata"], "metadata"), r
    assert r["gateway"] == "FAIL" and r["host"] == "FAIL", r


def test_none_reaches_nothing(world: World, user_home: Path) -> None:
    r = _probe(user_home, "none")
    assert r == {"gw": "none", "dns": "", **{t.split("=")[0]: "FAIL" for t in TARGETS}}

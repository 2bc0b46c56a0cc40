"""Network policy against real QEMU + passt, in the test world's namespaces (tests/world.py).

The tiny guest runs no DHCP client of its own: the lease it uses is the one the app applies
after the restore (the image's ``network_command``), as in the browser image.

With ``internet``, the guest reaches 10.213.0.2:8080 (the outside), but not the host's
loopback through its gateway (passt --no-map-gw: 10.213.0.2:8081 is refused) and — where
the nftables rule on passt's user is in place (the app as root) — not the host's own address
10.213.0.3. With ``none`` it reaches nothing. The app runs as the unprivileged test user.
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
# passt stalls here, and a blocked target must fail every time anyway.
GUEST_PROBE = (
    "gw=$(ip route | awk '/default/ {print $3}'); echo \"gw ${gw:-none}\"; "
    "for t in 10.213.0.2:8080 $gw:8081 10.213.0.3:8082; do body=; "
    "  for try in 1 2 3; do "
    "    body=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc ${t%:*} ${t#*:} "
    "    2>/dev/null | tail -1); [ -n \"$body\" ] && break; done; "
    "  echo \"$t ${body:-FAIL}\"; done"
)


def _probe(home: Path, network: str) -> dict[str, str]:
    env = {"BLANKSLATE_HOME": str(home), "BLANKSLATE_ACCEL": "tcg", "BLANKSLATE_KEYRING": "off"}
    bs = [sys.executable, "-m", "sandbox_app"]
    made = run_in_host([*bs, "context", "create", f"n-{network}", "--image", "tiny",
                        "--network", network], env)
    assert made.returncode == 0, made.stderr
    proc = run_in_host([*bs, "run", f"n-{network}", "--headless", "--json", "--exec",
                        GUEST_PROBE], env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["exec"][0]["stdout"]
    results = {}
    for line in out.splitlines():
        target, _, answer = line.partition(" ")
        results[target.rsplit(":", 1)[-1]] = answer
    return results


def test_internet_reaches_the_outside_but_not_the_host(world: World, user_home: Path) -> None:
    r = _probe(user_home, "internet")
    assert r["gw"] == "10.213.0.2"  # the lease the app applied after the restore
    # The body, once; Debian 12's passt (2023-03) has been seen once in CI to deliver it
    # twice in one stream ("outsideoutside"), a defect in its TCP path, not in the guard.
    assert re.fullmatch("(outside)+", r["8080"]), r
    assert r["8081"] == "FAIL"  # the host's loopback, through the gateway address


def test_none_reaches_nothing(world: World, user_home: Path) -> None:
    r = _probe(user_home, "none")
    assert r == {"gw": "none", "8080": "FAIL", "8081": "FAIL", "8082": "FAIL"}

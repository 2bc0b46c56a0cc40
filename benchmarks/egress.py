"""Download throughput through the egress guard against passt's direct path, same run.

    python benchmarks/egress.py [--image tiny] [--mib 64] [--rounds 3]

A web server on this host serves an N MiB file; a session of the tiny guest downloads it
(``wget -O /dev/null``, timed in the guest) over:
- ``direct``: passt on the host, as before the guard (the baseline): from the guest's
  gateway address, which passt maps to the host's loopback (the guest has the host's
  address itself there);
- ``guarded``: passt in the egress namespace, every byte relayed by the app's guard: from
  this host's own address, which the guard refuses — for the benchmark only, its policy lets
  that one address in. The path, relay and namespace are the product's. Runs unprivileged.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import ipaddress
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _home import bench_home

from sandbox_app.core.contexts import ContextStore, Profile
from sandbox_app.core.session import Session
from sandbox_app.core.vm import egress, network
from sandbox_app.core.vm.process import set_pdeathsig


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


async def direct(dns: object = (), *, lan: bool = False) -> network.NetworkBackend:
    """The path before the guard: passt on the host's own network."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    passt = shutil.which("passt")
    assert passt is not None
    proc = subprocess.Popen(
        [passt, "--foreground", "--quiet", "--fd", str(ours.fileno())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        pass_fds=[ours.fileno()], preexec_fn=set_pdeathsig)  # noqa: PLW1509
    ours.close()
    fd = theirs.detach()
    return network.NetworkBackend(
        ["stream", "id=net0", "server=off", "addr.type=fd", f"addr.str={fd}"], [fd], proc)


def host_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("198.51.100.1", 9))
        return str(s.getsockname()[0])


async def download_s(paths: object, name: str, host: str, port: int) -> float:
    ctx = ContextStore(paths).get(name)  # type: ignore[arg-type]
    s = await Session.start(paths, ctx)  # type: ignore[arg-type]
    try:
        await s.ready()
        res = await s.exec(
            "gw=$(ip route | awk '/default/ {print $3}'); t0=$(cut -d' ' -f1 /proc/uptime); "
            f"wget -q -O /dev/null http://{host}:{port}/big || echo FAIL; "
            "t1=$(cut -d' ' -f1 /proc/uptime); echo \"$t0 $t1\"", timeout=600)
        out = res.stdout.decode().split()
        if "FAIL" in out:
            raise SystemExit(f"the download failed: {res.stdout!r} {res.stderr!r}")
        return float(out[-1]) - float(out[-2])
    finally:
        await s.discard()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", default="tiny")
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    own = host_address()
    with tempfile.TemporaryDirectory() as www, bench_home(args.image) as paths:
        (Path(www) / "big").write_bytes(os.urandom(args.mib << 20))
        handler = functools.partial(_Quiet, directory=www)
        servers = [http.server.ThreadingHTTPServer((a, 0), handler) for a in ("127.0.0.1", own)]
        for server in servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        target = {"direct": ("$gw", servers[0].server_address[1]),
                  "guarded": (own, servers[1].server_address[1])}
        ContextStore(paths).create(Profile(name="net", image=args.image))
        guarded_internet = network.internet
        real_allowed = egress.allowed
        # For the benchmark only: this host's own address is the "internet".
        def allowed(addr: egress.IPAddress, *, lan: bool = False) -> bool:
            return addr == ipaddress.ip_address(own) or real_allowed(addr, lan=lan)

        egress.allowed = allowed
        times: dict[str, list[float]] = {"direct": [], "guarded": []}
        for _ in range(args.rounds):
            for mode, backend in (("direct", direct), ("guarded", guarded_internet)):
                network.internet = backend
                times[mode].append(await download_s(paths, "net", *target[mode]))
        network.internet = guarded_internet
        for server in servers:
            server.shutdown()
    med = {m: statistics.median(t) for m, t in times.items()}
    print(f"download of {args.mib} MiB in the {args.image} guest, median of {args.rounds}:")
    for m, t in med.items():
        print(f"  {m:<8} {t:6.2f} s  {args.mib / t:7.1f} MiB/s   "
              f"(runs: {', '.join(f'{x:.2f}' for x in times[m])})")
    print(f"  guarded/direct throughput: {med['direct'] / med['guarded']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

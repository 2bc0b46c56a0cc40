"""Keep and discard time vs data written in the guest, against dd and cp of the same size.

    python benchmarks/keep_discard.py [--image tiny] [--sizes 64,256,1024]

For each size N MiB: a session writes N MiB of random data in the guest (synced), then is
kept (timed) — and another session writes the same and is discarded (timed, secure erase
included). Baselines in the same run, on the same filesystem as the data dir:
``dd if=/dev/zero bs=1M count=N oflag=direct conv=fsync`` and ``cp`` of an N MiB file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _home import bench_home

from sandbox_app.core.contexts import ContextStore, Profile
from sandbox_app.core.session import EndReport, Session
from sandbox_app.core.storage import Paths


def _timed(argv: list[str]) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    return time.monotonic() - t0


def baselines(workdir: Path, mib: int) -> tuple[float, float]:
    src, dst, zeros = workdir / "src", workdir / "dst", workdir / "zeros"
    with open(src, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
        os.fsync(f.fileno())
    dd = _timed(["dd", "if=/dev/zero", f"of={zeros}", "bs=1M", f"count={mib}",
                 "oflag=direct", "conv=fsync"])
    subprocess.run(["sync"], check=True)
    cp = _timed(["sh", "-c", f"cp {src} {dst} && sync"])
    for p in (src, dst, zeros):
        p.unlink()
    return dd, cp


async def end_after_writing(paths: Paths, name: str, mib: int, keep: bool) -> EndReport:
    ctx = ContextStore(paths).get(name)
    s = await Session.start(paths, ctx)
    await s.exec(f"dd if=/dev/urandom of=/root/blob bs=1M count={mib} 2>/dev/null; sync",
                 timeout=1800)
    return await (s.keep() if keep else s.discard())


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", default="tiny")
    ap.add_argument("--sizes", default="64,256,1024")
    args = ap.parse_args()
    with bench_home(args.image, same_disk=True) as paths:
        print(f"{'MiB':>6} {'keep s':>8} {'discard s':>10} {'dd s':>7} {'cp s':>7} "
              f"{'keep/cp':>8} {'discard/dd':>11} {'state MiB':>10}")
        for mib in (int(x) for x in args.sizes.split(",")):
            store = ContextStore(paths)
            store.create(Profile(name=f"k{mib}", image=args.image))
            store.create(Profile(name=f"d{mib}", image=args.image))
            kept = await end_after_writing(paths, f"k{mib}", mib, keep=True)
            gone = await end_after_writing(paths, f"d{mib}", mib, keep=False)
            dd, cp = baselines(paths.data, mib)
            state = store.get(f"k{mib}").manifest().state
            print(f"{mib:>6} {kept.end_s:>8.2f} {gone.end_s:>10.2f} {dd:>7.2f} {cp:>7.2f} "
                  f"{kept.end_s / cp:>8.2f} {gone.end_s / dd:>11.2f} "
                  f"{(state.size if state else 0) / 2**20:>10.1f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

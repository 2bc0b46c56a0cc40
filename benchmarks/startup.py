"""Cold boot vs template restore vs full-state restore of the same context, in one run.

    python benchmarks/startup.py [--image tiny|browser] [--runs N]

Uses the images of the current BLANKSLATE_HOME (or the platform's data dir; the image is built
there first if missing) and a temporary home for its contexts, so it never touches the user's
contexts. Prints each timing (median of
N runs) and the ratios against the cold boot measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _home import bench_home

from sandbox_app.core.contexts import ContextStore, ExitDefault, Profile
from sandbox_app.core.session import Session
from sandbox_app.core.storage import Paths


async def _once(paths: Paths, name: str, cold: bool, keep: bool = False) -> tuple[float, float]:
    ctx = ContextStore(paths).get(name)
    s = await Session.start(paths, ctx, cold=cold)
    await s.ready()  # after a restore, the agent answers in the background
    launch = s.timings.launch_s or 0.0  # QEMU start → waiting for its state
    restore = launch + (s.timings.restore_s or float("nan"))
    agent = launch + (s.timings.agent_s or float("nan"))
    if keep:
        t0 = time.monotonic()
        await s.exec("echo kept > /root/kept; sync")
        await s.keep()
        print(f"  keep took {time.monotonic() - t0:.3f}s", file=sys.stderr)
    else:
        await s.discard()
    return restore, agent


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", default="tiny")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    with bench_home(args.image) as paths:
        store = ContextStore(paths)
        store.create(Profile(name="fresh", image=args.image, on_exit=ExitDefault.DISCARD))
        store.create(Profile(name="kept", image=args.image, on_exit=ExitDefault.KEEP))

        await _once(paths, "fresh", cold=False)  # warm-up: page cache, snapshot point check
        cold = [(await _once(paths, "fresh", cold=True))[1] for _ in range(args.runs)]
        tmpl = [await _once(paths, "fresh", cold=False) for _ in range(args.runs)]
        await _once(paths, "kept", cold=False, keep=True)
        full = [await _once(paths, "kept", cold=False) for _ in range(args.runs)]

    med = statistics.median
    cold_s = med(cold)
    rows = [
        ("cold boot → agent answering", cold_s),
        ("template restore → running", med(r for r, _ in tmpl)),
        ("template restore → agent answering", med(a for _, a in tmpl)),
        ("full-state restore (kept) → running", med(r for r, _ in full)),
        ("full-state restore (kept) → agent", med(a for _, a in full)),
    ]
    print(f"image={args.image} runs={args.runs} (median)")
    for label, secs in rows:
        print(f"  {label:<40} {secs:8.3f} s   ratio vs cold boot {cold_s / secs:7.1f}x")


if __name__ == "__main__":
    asyncio.run(main())

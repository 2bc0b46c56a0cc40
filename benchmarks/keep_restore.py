"""Keep and restore of a browser context: delta keeps against full-state keeps, in one run.

    python benchmarks/keep_restore.py [--runs N] [--json]

For each way of keeping (``delta``: device state + the RAM pages that differ from the golden
ram.img; ``full``: the whole migration stream, the way every keep worked before), on the
built ``browser`` image (built first if missing) in a throwaway home:

- keep after a small change (the session restored, the start page shown, a few seconds of
  idle): seconds, and how much the context grew beyond the disk bytes the session changed;
- start → page visible of the kept context (the engine: ``Session.start`` on an overlay made
  beforehand, as the app does, until the screen shows the start page's colour at its four
  corners);
- keep time and growth as the session dirties more RAM: the guest fills a tmpfs with 0, 128
  and 512 MiB of random bytes before the keep;
- PSS of an idle session's QEMU (``/proc/PID/smaps_rollup``) 10 s after its start, golden and
  kept: what one more session costs in memory.

Medians of N runs where it says so. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _home import bench_home
from browser_start import page_visible

from sandbox_app.core.contexts import ContextStore, Network, Profile
from sandbox_app.core.images import ImageStore
from sandbox_app.core.session import Session, prepare_overlay
from sandbox_app.core.storage import Paths

IDLE_S = 3.0
FILL = ("mkdir -p /run/fill && mount -t tmpfs fill /run/fill && "
        "dd if=/dev/urandom of=/run/fill/x bs=1M count={mib} 2>/dev/null")
MiB = 1 << 20


def _pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _keep_once(paths: Paths, name: str, *, delta: bool, fill_mib: int) -> dict[str, float]:
    """A session of ``name`` (a fresh context): page shown, idle, fill RAM, keep."""
    ctx = ContextStore(paths).get(name)
    before = ctx.size_bytes()
    session = await Session.start(paths, ctx)
    await page_visible(session, time.monotonic(), 60.0)
    await session.ready()
    await asyncio.sleep(IDLE_S)
    if fill_mib:
        res = await session.exec(FILL.format(mib=fill_mib), timeout=600)
        assert res.exit_code == 0, res.stderr
    session.delta_keep = delta
    changed = session.changed_bytes()
    t0 = time.monotonic()
    report = await session.keep()
    keep_s = time.monotonic() - t0
    growth = ctx.size_bytes() - before
    return {"keep_s": keep_s, "growth_mib": growth / MiB,
            "growth_beyond_disk_mib": (growth - changed) / MiB, "changed_disk_mib": changed / MiB,
            "end_s": report.end_s}


async def _start_kept(paths: Paths, name: str) -> dict[str, float]:
    """Start → page visible; the overlay is made first, as the app does ahead of time."""
    ctx = ContextStore(paths).get(name)
    store = ImageStore(paths)
    image = store.get(ctx.profile.image)
    point = await store.ensure_snapshot(image, store.accel_for(image))
    prepared = await prepare_overlay(paths, ctx, image, point)
    t0 = time.monotonic()
    session = await Session.start(paths, ctx, prepared=prepared)
    try:
        page = await page_visible(session, t0, 60.0)
        await asyncio.sleep(10.0)
        pss = _pss_mib(session.machine.pid) if session.machine and session.machine.pid else 0.0
    finally:
        await session.discard()
    return {"page_s": page, "pss_mib": pss}


async def measure(paths: Paths, runs: int) -> dict[str, Any]:
    store = ImageStore(paths)
    image = store.get("browser")
    await store.ensure_snapshot(image, store.accel_for(image))
    contexts = ContextStore(paths)
    result: dict[str, Any] = {"runs": runs}
    # An idle golden session's memory, for reference.
    contexts.create(Profile(name="golden", image="browser", network=Network.NONE))
    golden = await _start_kept(paths, "golden")
    result["golden"] = golden
    for way in ("delta", "full"):
        keeps, starts = [], []
        for i in range(runs):
            name = f"{way}{i}"
            contexts.create(Profile(name=name, image="browser", network=Network.NONE))
            keeps.append(await _keep_once(paths, name, delta=way == "delta", fill_mib=0))
            starts.append(await _start_kept(paths, name))
            contexts.remove(name)
        sizes = {}
        for mib in (0, 128, 512):
            name = f"{way}fill{mib}"
            contexts.create(Profile(name=name, image="browser", network=Network.NONE))
            sizes[mib] = await _keep_once(paths, name, delta=way == "delta", fill_mib=mib)
            contexts.remove(name)
        result[way] = {
            "keep_s": statistics.median(k["keep_s"] for k in keeps),
            "growth_mib": statistics.median(k["growth_mib"] for k in keeps),
            "growth_beyond_disk_mib": statistics.median(k["growth_beyond_disk_mib"]
                                                        for k in keeps),
            "kept_page_s": statistics.median(s["page_s"] for s in starts),
            "kept_pss_mib": statistics.median(s["pss_mib"] for s in starts),
            "by_fill": sizes,
        }
    return result


def _print(result: dict[str, Any]) -> None:
    d, f = result["delta"], result["full"]
    print(f"browser image, medians of {result['runs']}; golden idle session PSS "
          f"{result['golden']['pss_mib']:.0f} MiB, page {result['golden']['page_s']:.2f} s")
    print(f"  {'':<44} {'delta':>10} {'full':>10}")
    rows = (("keep after a small change (s)", "keep_s", "{:.2f}"),
            ("context growth (MiB)", "growth_mib", "{:.1f}"),
            ("  beyond the changed disk bytes (MiB)", "growth_beyond_disk_mib", "{:.1f}"),
            ("kept context: start → page visible (s)", "kept_page_s", "{:.2f}"),
            ("kept context: idle session PSS (MiB)", "kept_pss_mib", "{:.0f}"))
    for label, key, fmt in rows:
        print(f"  {label:<44} {fmt.format(d[key]):>10} {fmt.format(f[key]):>10}")
    for mib in (0, 128, 512):
        a, b = d["by_fill"][mib], f["by_fill"][mib]
        print(f"  keep with {mib:>3} MiB of RAM dirtied: s / growth MiB"
              f"{'':<4} {a['keep_s']:>4.2f} / {a['growth_mib']:<5.0f}"
              f"{b['keep_s']:>4.2f} / {b['growth_mib']:.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    async def run() -> dict[str, Any]:
        with bench_home("browser") as paths:
            return await measure(paths, args.runs)

    result = asyncio.run(run())
    _print(result)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

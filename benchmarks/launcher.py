"""Click → page, as the user sees it: the real desktop app, Start to the page in its window.

    python benchmarks/launcher.py [--runs N] [--image browser|tiny] [--json]

Drives the real controller, launcher and tray (Qt offscreen unless QT_QPA_PLATFORM says
otherwise) in a throwaway home whose image store is the current BLANKSLATE_HOME's (the image
is built there first if it is missing). A "click" is the request the launcher's Start button
emits; the time runs from it to the first frame of the session window that shows the page
(the browser's start page: its colour at the four corners; for ``tiny``, any guest pixels).
Cases, medians of N each:

- ``after launch``: the app just started; Start once its standby QEMU is ready.
- ``after discard``: Stop → Discard → Start again (the standby is made again at once).
- ``spare only``: the same with ``standby = "off"``: a prepared overlay, QEMU launched on
  the click.
- ``no spare``: the same without the prepared overlay either: what every Start cost before
  (the LUKS overlay made on the critical path).
- ``kept context``: Start of a context whose session was kept (full saved state restore),
  with its standby.

Beside each, the engine's own times for the same session: QEMU launch (0 when the standby
had done it) and state restore. Also printed: how long the standby takes to be ready after
app launch, and what a standby costs while it waits (its QEMU's and passt's RSS, their CPU
over ``IDLE_S``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from _home import bench_home
from PySide6.QtGui import QImage

from sandbox_app.core.contexts import ContextStore, ExitDefault, Profile
from sandbox_app.core.images import ImageStore
from sandbox_app.core.session import RunState
from sandbox_app.core.storage import Paths
from sandbox_app.gui import asyncbridge
from sandbox_app.gui.controller import App
from sandbox_app.gui.launcher import LauncherWindow
from sandbox_app.gui.tray import Tray

IDLE_S = 5.0
START_PAGE = 0x1D2B3A  # vm_images/browser/files/start.html's background
TIMEOUT_S = 600.0


async def _wait(cond: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - t0


def _page_shown(app: App, name: str, image: str) -> bool:
    window = app.windows.get(name)
    if window is None:
        return False
    img: QImage = window.display.grab_guest()
    if img.isNull() or img.width() < 64:
        return False
    if image == "browser":
        w, h = img.width(), img.height()
        return all(img.pixel(x, y) & 0xFFFFFF == START_PAGE
                   for x, y in ((4, 4), (w - 5, 4), (4, h - 5), (w - 5, h - 5)))
    data = bytes(img.constBits())
    return data.count(data[:4]) * 4 != len(data)


async def _click_to_page(app: App, name: str, image: str) -> dict[str, float]:
    standby = app.runner(name).standby_ready
    app.signals.open_requested.emit(name)  # what the launcher's Start button emits
    page_s = await _wait(lambda: _page_shown(app, name, image), "the page in the window")
    session = app.runners[name].session
    assert session is not None
    t = session.timings
    return {"click_to_page_s": page_s, "engine_restore_s": t.restore_s or float("nan"),
            "launch_on_click_s": 0.0 if standby else (t.launch_s or float("nan"))}


async def _stop(app: App, name: str) -> None:
    app.request_stop(name)  # the context's exit default, without asking
    await _wait(lambda: app.state(name) is RunState.STOPPED and name not in app.windows,
                "the session to end")


async def _spare(app: App, name: str) -> float:
    return await _wait(lambda: app.runner(name).spare_ready, "the spare overlay")


async def _standby(app: App, name: str) -> float:
    return await _wait(lambda: app.runner(name).standby_ready, "the standby QEMU")


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _standby_cost(app: App, name: str) -> dict[str, float]:
    """RSS and CPU of the standby's QEMU and passt while it waits."""
    standby = app.runner(name)._standby
    assert standby is not None and standby.machine is not None
    pids = [standby.machine.pid or 0]
    if standby.network is not None and standby.network.process is not None:
        pids.append(standby.network.process.pid)
    await asyncio.sleep(1.0)
    before = [_ticks(p) for p in pids]
    await asyncio.sleep(IDLE_S)
    hz = os.sysconf("SC_CLK_TCK")
    cpu = sum(_ticks(p) - b for p, b in zip(pids, before, strict=True)) / hz
    return {"qemu_rss_mib": _rss_mib(pids[0]),
            "passt_rss_mib": _rss_mib(pids[1]) if len(pids) > 1 else 0.0,
            "cpu_percent": 100 * cpu / IDLE_S}


async def measure(paths: Paths, image: str, runs: int) -> dict[str, Any]:
    contexts = ContextStore(paths)
    contexts.create(Profile(name="fresh", image=image, on_exit=ExitDefault.DISCARD))
    contexts.create(Profile(name="kept", image=image, on_exit=ExitDefault.KEEP))
    store = ImageStore(paths)
    img = store.get(image)
    await store.ensure_snapshot(img, store.accel_for(img))
    app = App(paths)
    launcher = LauncherWindow(app, has_tray=False)
    tray = Tray(app)
    launcher.show()
    cases: dict[str, list[dict[str, float]]] = {
        "after launch": [], "after discard": [], "spare only": [], "no spare": [],
        "kept context": []}
    settings = paths.config / "app.toml"
    try:
        settings.write_text('standby = "on"\n')
        app.prepare_spares(first="fresh")
        standby_after_launch_s = await _standby(app, "fresh")
        idle = await _standby_cost(app, "fresh")
        cases["after launch"].append(await _click_to_page(app, "fresh", image))
        await _stop(app, "fresh")
        for _ in range(runs):
            await _standby(app, "fresh")
            cases["after discard"].append(await _click_to_page(app, "fresh", image))
            await _stop(app, "fresh")
        await _standby(app, "fresh")
        settings.write_text('standby = "off"\n')
        app.runner("fresh").set_standby(False)
        for _ in range(runs):
            await _spare(app, "fresh")
            cases["spare only"].append(await _click_to_page(app, "fresh", image))
            await _stop(app, "fresh")
        for _ in range(runs):
            await _spare(app, "fresh")
            await app.runner("fresh")._cancel_spare()
            cases["no spare"].append(await _click_to_page(app, "fresh", image))
            await _stop(app, "fresh")
        settings.write_text('standby = "on"\n')
        await _spare(app, "kept")
        await _click_to_page(app, "kept", image)
        await _stop(app, "kept")  # exit default: keep
        for _ in range(runs):
            await _standby(app, "kept")
            cases["kept context"].append(await _click_to_page(app, "kept", image))
            await _stop(app, "kept")
    finally:
        await app.shutdown()
        tray.icon.hide()
        launcher.close()
    return {
        "image": image,
        "runs": runs,
        "standby_ready_after_launch_s": standby_after_launch_s,
        "standby_idle": idle,
        "cases": {
            case: {
                "click_to_page_s": statistics.median(r["click_to_page_s"] for r in rs),
                "engine_restore_s": statistics.median(r["engine_restore_s"] for r in rs),
                "launch_on_click_s": statistics.median(r["launch_on_click_s"] for r in rs),
                "samples": [round(r["click_to_page_s"], 3) for r in rs],
            } for case, rs in cases.items()
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--image", choices=("browser", "tiny"), default="browser")
    ap.add_argument("--json", action="store_true", help="also print one JSON object")
    args = ap.parse_args()
    qapp = asyncbridge.create_qapplication(sys.argv[:1])
    qapp.setQuitOnLastWindowClosed(False)

    async def run() -> int:
        with bench_home(args.image) as paths:
            result = await measure(paths, args.image, args.runs)
        idle = result["standby_idle"]
        print(f"{args.image} image, medians of {args.runs} (after launch: 1 run); standby "
              f"ready {result['standby_ready_after_launch_s']:.2f} s after app launch; while "
              f"it waits: QEMU {idle['qemu_rss_mib']:.0f} MiB, passt "
              f"{idle['passt_rss_mib']:.0f} MiB RSS, CPU {idle['cpu_percent']:.1f}%")
        print(f"  {'case':<14} {'click → page':>13} {'QEMU launch':>12} {'restore':>9}   samples")
        for case, r in result["cases"].items():
            print(f"  {case:<14} {r['click_to_page_s']:>11.3f} s {r['launch_on_click_s']:>10.3f} s"
                  f" {r['engine_restore_s']:>7.3f} s   {r['samples']}")
        if args.json:
            print(json.dumps(result))
        return 0

    return asyncbridge.run(qapp, run)


if __name__ == "__main__":
    sys.exit(main())

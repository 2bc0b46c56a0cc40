"""Click → page, as the user sees it: the real desktop app, Start to the page in its window.

    python benchmarks/launcher.py [--runs N] [--image browser|tiny] [--json]

Drives the real controller, launcher and tray (Qt offscreen unless QT_QPA_PLATFORM says
otherwise) in a throwaway home whose image store is the current BLANKSLATE_HOME's (the image
is built there first if it is missing). A "click" is the request the launcher's Start button
emits; the time runs from it to the first frame of the session window that shows the page
(the browser's start page: its colour at the four corners; for ``tiny``, any guest pixels).
Cases, medians of N each:

- ``after launch``: the app just started; Start once its spare overlay is ready.
- ``after discard``: Stop → Discard → Start again (the spare survives the discard).
- ``no spare``: the same with the spare thrown away first: what every Start cost before
  spares were kept for every context (the LUKS overlay made on the critical path).
- ``kept context``: Start of a context whose session was kept (full saved state restore).

Beside each, the engine's own restore time (QEMU start → guest running) of the same
session. Also printed: how long the spare takes to make after app launch. Nothing is asserted.
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
    app.signals.open_requested.emit(name)  # what the launcher's Start button emits
    page_s = await _wait(lambda: _page_shown(app, name, image), "the page in the window")
    session = app.runners[name].session
    restore = session.timings.restore_s if session is not None else None
    return {"click_to_page_s": page_s, "engine_restore_s": restore or float("nan")}


async def _stop(app: App, name: str) -> None:
    app.request_stop(name)  # the context's exit default, without asking
    await _wait(lambda: app.state(name) is RunState.STOPPED and name not in app.windows,
                "the session to end")


async def _spare(app: App, name: str) -> float:
    return await _wait(lambda: app.runner(name).spare_ready, "the spare overlay")


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
        "after launch": [], "after discard": [], "no spare": [], "kept context": []}
    try:
        app.prepare_spares(first="fresh")
        spare_after_launch_s = await _spare(app, "fresh")
        cases["after launch"].append(await _click_to_page(app, "fresh", image))
        await _stop(app, "fresh")
        for _ in range(runs):
            await _spare(app, "fresh")
            cases["after discard"].append(await _click_to_page(app, "fresh", image))
            await _stop(app, "fresh")
        for _ in range(runs):
            await _spare(app, "fresh")
            await app.runner("fresh")._cancel_spare()
            cases["no spare"].append(await _click_to_page(app, "fresh", image))
            await _stop(app, "fresh")
        await _spare(app, "kept")
        await _click_to_page(app, "kept", image)
        await _stop(app, "kept")  # exit default: keep
        for _ in range(runs):
            await _spare(app, "kept")
            cases["kept context"].append(await _click_to_page(app, "kept", image))
            await _stop(app, "kept")
    finally:
        await app.shutdown()
        tray.icon.hide()
        launcher.close()
    return {
        "image": image,
        "runs": runs,
        "spare_ready_after_launch_s": spare_after_launch_s,
        "cases": {
            case: {
                "click_to_page_s": statistics.median(r["click_to_page_s"] for r in rs),
                "engine_restore_s": statistics.median(r["engine_restore_s"] for r in rs),
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
        await ImageStore(Paths.from_env().ensure()).build(args.image)  # only if missing
        with bench_home() as paths:
            result = await measure(paths, args.image, args.runs)
        print(f"{args.image} image, medians of {args.runs} (after launch: 1 run); "
              f"spare ready {result['spare_ready_after_launch_s']:.2f} s after app launch")
        print(f"  {'case':<16} {'click → page':>13} {'engine restore':>15}   samples")
        for case, r in result["cases"].items():
            print(f"  {case:<16} {r['click_to_page_s']:>11.3f} s {r['engine_restore_s']:>13.3f} s"
                  f"   {r['samples']}")
        if args.json:
            print(json.dumps(result))
        return 0

    return asyncbridge.run(qapp, run)


if __name__ == "__main__":
    sys.exit(main())

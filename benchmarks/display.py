"""The session display's frames per second, and the app's memory with one session open.

    python benchmarks/display.py [--seconds S] [--content noise|page] [--home DIR]
                                 [--part all|fps|rss] [--json]

fps: the panning QEMU of ``rfb_throughput.py`` (std VGA at 1280x800x32, the picture moved by a
few lines every 30 ms) feeds, one after the other for S seconds each, (1) an ``RfbClient``
alone, as ``rfb_throughput.py`` measures it, and (2) an ``RfbClient`` driving a real
``VmDisplay`` shown at 1280x800 (1:1, no scaling) with the app's encodings and frame cap. It
prints the frames the widget painted per second (counted in its paint events, as full-screen
equivalents), the updates it received per second, and the ratio painted fps / client-only
updates/s. Goal: at least 30 fps. The default content is random noise, so every pixel changes
at each pan (full-screen updates); with ``--content page`` QEMU sends only the 16-pixel
chunks that changed, thousands of small rectangles per update.

rss: the real controller (``App``, launcher, tray) with one ``tiny`` session open, in a
temporary BLANKSLATE_HOME whose image store is ``--home``'s (default: the test suite's cache,
``~/.cache/blankslate-tests/home``; the tiny image is built there if missing). Once the session
window shows guest pixels it prints this process's VmRSS and VmHWM from /proc/self/status.
QEMU (and passt) are child processes, so they are not in that number; their RSS is printed
apart, for information. Goal: at most 150 MiB. The session is then discarded and the
temporary home removed. This part runs first, so VmHWM is not inflated by the fps part.

Qt runs offscreen unless QT_QPA_PLATFORM says otherwise (it works under Xvfb too). Only
measured numbers are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from _home import ensure_images
from PySide6.QtGui import QPaintEvent
from PySide6.QtWidgets import QSystemTrayIcon
from rfb_throughput import (
    HEIGHT,
    PAN_LINES,
    WIDTH,
    VgaSource,
    count_updates,
    fill_vram,
    measure,
    page_like,
    pan,
    vga_qemu,
    vram_address,
)

from sandbox_app.core.contexts import ContextStore, ExitDefault, Profile
from sandbox_app.core.guest import Encoding, RfbClient
from sandbox_app.core.session import RunState
from sandbox_app.core.storage import Paths
from sandbox_app.gui import asyncbridge
from sandbox_app.gui.app import app_icon
from sandbox_app.gui.controller import App
from sandbox_app.gui.display import VmDisplay
from sandbox_app.gui.launcher import LauncherWindow
from sandbox_app.gui.tray import Tray

GOAL_FPS = 30.0
GOAL_RSS_MIB = 150.0
APP_MAX_FPS = 60  # what jobs.DisplayJob passes to RfbClient.run()
WARM_UP_S = 0.5
SESSION_TIMEOUT_S = 120.0
SETTLE_S = 1.0  # after start-up work (the spare overlay) has finished
CONTEXT = "bench"
DEFAULT_HOME = Path.home() / ".cache" / "blankslate-tests" / "home"


# ---------------------------------------------------------------------------- fps


class CountingDisplay(VmDisplay):
    """The real display widget, counting what its paint events drew of the guest picture.

    One RFB update arrives as several rectangles and Qt may paint between them, so a paint
    event is often part of a frame: ``frames`` adds up the painted share of the picture (a
    full-screen repaint counts 1), ``paints`` counts the paint events that drew any of it.
    """

    def __init__(self, client: RfbClient) -> None:
        super().__init__(client)
        self.frames = 0.0
        self.paints = 0

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        target = self._target()
        if self._image.isNull() or target.isEmpty():
            return
        drawn = event.region().intersected(target)
        # QRegion iterates over its rectangles (PySide6's stubs lack __iter__).
        area = sum(r.width() * r.height() for r in drawn)  # type: ignore[attr-defined]
        if area:
            self.paints += 1
            self.frames += area / (target.width() * target.height())


async def _measure_widget(vga: VgaSource, seconds: float) -> dict[str, Any]:
    """Painted frames/s and updates/s of an RfbClient shown in a 1280x800 VmDisplay."""
    client = await RfbClient.connect(vga.vnc)  # the app's default encodings
    display = CountingDisplay(client)
    display.resize(WIDTH, HEIGHT)
    display.show()
    updates = count_updates(client)
    stop = asyncio.Event()
    panner = asyncio.create_task(pan(vga.qmp, stop), name="pan")
    task = asyncio.create_task(client.run(max_fps=APP_MAX_FPS), name="rfb")
    try:
        await asyncio.sleep(WARM_UP_S)
        display.frames, display.paints, updates[0] = 0.0, 0, 0
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        frames, paints, received = display.frames, display.paints, updates[0]
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        picture = (display._target().width(), display._target().height())
    finally:
        stop.set()
        await panner
        client.close()
        await task
        display.close()
        display.deleteLater()
    return {
        "painted_fps": frames / elapsed,
        "paint_events_per_s": paints / elapsed,
        "updates_per_s": received / elapsed,
        "cpu_ms_per_frame": cpu / frames * 1000 if frames else None,
        "widget_size": [display.width(), display.height()],
        "picture_size": list(picture),
    }


async def measure_fps(seconds: float, content: str) -> dict[str, Any]:
    """The client alone, then client + widget, against the same panning QEMU."""
    load = os.getloadavg()[0]  # printed: other work on the machine lowers both numbers
    with tempfile.TemporaryDirectory(prefix="blankslate-display-") as tmp:
        async with vga_qemu(Path(tmp)) as vga:
            lines = HEIGHT + PAN_LINES
            data = page_like(WIDTH, lines) if content == "page" else os.urandom(WIDTH * lines * 4)
            await fill_vram(vga.gdb, await vram_address(vga.qmp), data)
            raw = (Encoding.RAW, Encoding.EXTENDED_DESKTOP_SIZE)
            alone_ups, _, _, alone_cpu = await measure(vga.vnc, vga.qmp, raw, seconds)
            widget = await _measure_widget(vga, seconds)
    return {
        "seconds": seconds,
        "content": content,
        "platform": os.environ["QT_QPA_PLATFORM"],
        "load_average": load,
        "client_only_updates_per_s": alone_ups,
        "client_only_cpu_ms_per_update": alone_cpu,
        **widget,
        "ratio_painted_to_client_only": widget["painted_fps"] / alone_ups if alone_ups else None,
        "goal_fps": GOAL_FPS,
    }


# ---------------------------------------------------------------------------- rss


def _status_kib(pid: int | str, field: str) -> int:
    """A ``kB`` line of /proc/PID/status (0 if the process or the line is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _children() -> list[tuple[int, str]]:
    """(pid, name) of every live descendant of this process."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z":  # zombies hold no memory
                parents[int(entry.name)] = int(fields[1])
                names[int(entry.name)] = name
    found, frontier = [], [os.getpid()]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return [(p, names[p]) for p in sorted(found)]


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _shows_guest_pixels(app: App) -> bool:
    """True once the session window's picture is anything but one flat color (console text)."""
    window = app.windows.get(CONTEXT)
    if window is None:
        return False
    img = window.display.grab_guest()
    if img.isNull():
        return False
    data = bytes(img.constBits())
    return data.count(data[:4]) * 4 != len(data)


async def measure_rss(home: Path) -> dict[str, Any]:
    """The app's RSS with one tiny session open, in a throwaway home using ``home``'s images."""
    with _environ(BLANKSLATE_HOME=str(home)):
        store = ensure_images("tiny")  # built only if missing or its recipe changed
    with (tempfile.TemporaryDirectory(prefix="blankslate-display-home-") as tmp,
          _environ(BLANKSLATE_HOME=str(Path(tmp) / "home"), BLANKSLATE_KEYRING="off")):
        paths = Paths.from_env().ensure()
        paths.images.symlink_to(store.images)
        ContextStore(paths).create(
            Profile(name=CONTEXT, image="tiny", on_exit=ExitDefault.DISCARD))
        app = App(paths)
        launcher = LauncherWindow(app, has_tray=QSystemTrayIcon.isSystemTrayAvailable())
        tray = Tray(app)
        launcher.show()
        await asyncio.sleep(0.5)
        idle_kib = _status_kib("self", "VmRSS")
        try:
            t0 = time.monotonic()
            app.open_context(CONTEXT)
            await _wait(lambda: _shows_guest_pixels(app), SESSION_TIMEOUT_S, "guest pixels")
            pixels_s = time.monotonic() - t0
            # Steady state: the next session's overlay is prepared (qemu-img) in the background.
            await _wait(lambda: not any(n.startswith("qemu-img") for _, n in _children()),
                        SESSION_TIMEOUT_S, "the spare overlay")
            await asyncio.sleep(SETTLE_S)
            rss_kib = _status_kib("self", "VmRSS")
            hwm_kib = _status_kib("self", "VmHWM")
            children: list[dict[str, Any]] = [
                {"pid": pid, "name": name, "rss_mib": _status_kib(pid, "VmRSS") / 1024}
                for pid, name in _children()]
            session = app.runners[CONTEXT].session
            accel = session.accel.value if session is not None else None
            app.request_stop(CONTEXT)  # the context's exit default: discard
            await _wait(lambda: app.state(CONTEXT) is RunState.STOPPED
                        and CONTEXT not in app.windows, SESSION_TIMEOUT_S, "the discard")
        finally:
            await app.shutdown()
            tray.icon.hide()
            launcher.close()
            launcher.deleteLater()
        runtime_left = sorted(p.name for p in paths.runtime.iterdir())
        processes_left = [n for _, n in _children()]
        with contextlib.suppress(TimeoutError):  # leave nothing behind before the home goes
            await _wait(lambda: not _children(), 30, "child processes")
    return {
        "context_image": "tiny",
        "accel": accel,
        "start_to_guest_pixels_s": pixels_s,
        "app_rss_mib_launcher_only": idle_kib / 1024,
        "app_rss_mib": rss_kib / 1024,
        "app_hwm_mib": hwm_kib / 1024,
        "app_excludes_children": True,
        "children": children,
        "qemu_rss_mib": sum(c["rss_mib"] for c in children
                            if c["name"].startswith("qemu-system")),
        "left_behind": {"processes": processes_left, "runtime_dir": runtime_left},
        "goal_rss_mib": GOAL_RSS_MIB,
    }


# ---------------------------------------------------------------------------- report


def _print_report(result: dict[str, Any]) -> None:
    if "rss" in result:
        r = result["rss"]
        print(f"App memory, one '{r['context_image']}' session open ({r['accel']}; guest pixels "
              f"{r['start_to_guest_pixels_s']:.1f} s after Start):")
        print(f"  app VmRSS {r['app_rss_mib']:6.1f} MiB  (goal <= {GOAL_RSS_MIB:.0f} MiB; "
              f"launcher alone {r['app_rss_mib_launcher_only']:.1f} MiB)")
        print(f"  app VmHWM {r['app_hwm_mib']:6.1f} MiB  (peak since the process started)")
        print("  excluded (child processes, for information): " + ", ".join(
            f"{c['name']} {c['rss_mib']:.1f} MiB" for c in r["children"]))
        left = r["left_behind"]
        print(f"  when shutdown returned: child processes {left['processes'] or 'none'}, "
              f"runtime dir entries {left['runtime_dir'] or 'none'}")
    if "fps" in result:
        f = result["fps"]
        print(f"Display, {WIDTH}x{HEIGHT} {f['content']} panned every 30 ms, "
              f"QT_QPA_PLATFORM={f['platform']}, {f['seconds']:.0f} s each:")
        print(f"  RfbClient alone          {f['client_only_updates_per_s']:5.1f} updates/s  "
              f"(CPU {f['client_only_cpu_ms_per_update']:.1f} ms/update)")
        cpu = f["cpu_ms_per_frame"]
        print(f"  RfbClient + VmDisplay    {f['painted_fps']:5.1f} frames painted/s "
              f"(goal >= {GOAL_FPS:.0f}; full-screen equivalents), "
              f"{f['updates_per_s']:.1f} updates/s, {f['paint_events_per_s']:.1f} paint events/s"
              + (f", CPU {cpu:.1f} ms/frame" if cpu is not None else ""))
        print(f"  widget {f['widget_size'][0]}x{f['widget_size'][1]}, picture drawn at "
              f"{f['picture_size'][0]}x{f['picture_size'][1]}; load average at the start "
              f"{f['load_average']:.2f} on {os.cpu_count()} CPUs")
        ratio = f["ratio_painted_to_client_only"]
        shown = "n/a (no client-only updates)" if ratio is None else f"{ratio:.2f}"
        print(f"  painted fps / client-only updates/s: {shown}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="per fps measurement")
    ap.add_argument("--home", type=Path, default=DEFAULT_HOME,
                    help="BLANKSLATE_HOME whose tiny image the rss part uses")
    ap.add_argument("--part", choices=("all", "fps", "rss"), default="all")
    ap.add_argument("--content", choices=("noise", "page"), default="noise",
                    help="screen content for fps: noise (every pixel changes) or page-like")
    ap.add_argument("--json", action="store_true", help="also print one JSON object")
    args = ap.parse_args()
    qapp = asyncbridge.create_qapplication(sys.argv[:1])
    qapp.setQuitOnLastWindowClosed(False)  # as the app: closing a window must not quit
    qapp.setWindowIcon(app_icon())

    async def run() -> int:
        result: dict[str, Any] = {}
        if args.part in ("all", "rss"):  # first: VmHWM then reflects the app alone
            result["rss"] = await measure_rss(args.home.expanduser())
        if args.part in ("all", "fps"):
            result["fps"] = await measure_fps(args.seconds, args.content)
        _print_report(result)
        if args.json:
            print(json.dumps(result))
        return 0

    return asyncbridge.run(qapp, run)


if __name__ == "__main__":
    sys.exit(main())

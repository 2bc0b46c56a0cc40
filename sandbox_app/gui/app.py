"""The desktop app's entry point: ``main()`` assembles controller, launcher and tray.

``blankslate gui`` and ``blankslate`` with no arguments call ``main``. The controller
(``controller.App``) does the work; the launcher and the tray only emit ``AppSignals``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QSystemTrayIcon, QWidget

from ..core.contexts import ContextStore, Journal
from ..core.session.control import ControlServer
from ..core.storage import Paths
from . import asyncbridge
from .controller import App
from .dialogs import ask
from .launcher import LauncherWindow
from .tray import Tray

# Package data: the same lookup from a checkout, an editable install and an installed wheel.
ICONS = Path(str(importlib.resources.files("sandbox_app") / "icons"))
ICON = ICONS / "blankslate.svg"


def app_icon() -> QIcon:
    """The SVG icon plus its rendered PNG sizes (trays often want a bitmap)."""
    icon = QIcon(str(ICON))
    for size in (16, 32, 48, 64, 128, 256):
        icon.addFile(str(ICONS / f"blankslate-{size}.png"))
    return icon


def confirm_quit(app: App, parent: QWidget | None, on_yes: Callable[[], None]) -> None:
    """Ask before quitting with sessions running (they are discarded)."""
    running = app.running()
    if not running:
        on_yes()
        return
    ask(parent, "Quit Blank Slate",
        f"{len(running)} session(s) running ({', '.join(running)}).\n"
        "Quitting discards them: everything they changed is securely erased. Quit?",
        on_yes, name="confirmQuit")


def main(argv: list[str] | None = None) -> int:
    """``blankslate gui`` (and ``blankslate`` with no arguments)."""
    parser = argparse.ArgumentParser(prog="blankslate gui")
    parser.add_argument("--open", metavar="CONTEXT", help="start this context right away")
    parser.add_argument("--url", help="with --open: the page to show once it runs")
    args = parser.parse_args(argv or [])
    logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)  # expected disconnects
    asyncbridge.stderr_excepthook()
    qapp = asyncbridge.create_qapplication(sys.argv[:1])
    qapp.setApplicationName("Blank Slate")
    qapp.setDesktopFileName("org.blankslate.BlankSlate")
    qapp.setWindowIcon(app_icon())
    qapp.setQuitOnLastWindowClosed(False)  # the tray (or launcher) decides when we quit
    paths = Paths.from_env().ensure()
    Journal(paths).recover()
    ContextStore(paths).ensure_defaults()

    async def run() -> int:
        app = App(paths)
        launcher = LauncherWindow(app, has_tray=QSystemTrayIcon.isSystemTrayAvailable())
        tray = Tray(app)
        latch = asyncbridge.QuitLatch()
        app.signals.show_launcher_requested.connect(launcher.bring_up)
        app.signals.quit_requested.connect(
            lambda: confirm_quit(app, launcher, latch.release))
        # A logout, shutdown or kill: every session is suspended (resumed at the next
        # start), then the app exits 0. Never a traceback from a signal.
        ending: list[bool] = []

        def end_of_desktop_session() -> None:
            ending.append(True)
            latch.release(0)

        asyncbridge.on_signals((signal.SIGTERM, signal.SIGHUP, signal.SIGINT),
                               end_of_desktop_session)
        qapp.commitDataRequest.connect(lambda _m: end_of_desktop_session())
        control = await ControlServer(paths, app.control).start()
        launcher.show()
        app.probe_accel()
        app.prepare_spares(first=args.open)
        app.update_old_images()
        if args.open:
            job = app.open_context(args.open)
            if job is not None and args.url:
                job.finished.connect(lambda _c: app.transfers.open_url(args.open, args.url))
        code = await latch.wait()
        launcher.hide()
        await control.close()
        await app.shutdown(suspend=bool(ending))
        tray.hide()
        return code

    return asyncbridge.run(qapp, run)


__all__ = ["App", "app_icon", "confirm_quit", "main"]

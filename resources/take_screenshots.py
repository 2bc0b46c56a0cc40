"""Screenshots of the launcher and a session window for the docs (run under X, e.g. Xvfb).

    Xvfb :99 & DISPLAY=:99 .venv/bin/python resources/take_screenshots.py

Uses a throwaway BLANKSLATE_HOME whose image store links to the test cache's built tiny
image (``~/.cache/blankslate-tests/home``; run the GUI tests or build it first).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
home = Path(tempfile.mkdtemp()) / "home"
os.environ.update(BLANKSLATE_HOME=str(home), BLANKSLATE_KEYRING="off")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from sandbox_app.core.contexts import ContextStore, ExitDefault, Network, Profile  # noqa: E402
from sandbox_app.core.paths import Paths  # noqa: E402
from sandbox_app.gui import asyncbridge  # noqa: E402
from sandbox_app.gui.app import App, app_icon  # noqa: E402
from sandbox_app.gui.launcher import LauncherWindow  # noqa: E402

CACHE = Path.home() / ".cache" / "blankslate-tests" / "home" / "data" / "images"


async def until(cond: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.1)


async def shoot() -> int:
    paths = Paths.from_env().ensure()
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.images.symlink_to(CACHE)
    store = ContextStore(paths)
    store.ensure_defaults()
    store.create(Profile(name="banking", image="tiny", color="#c0392b",
                         network=Network.NONE, on_exit=ExitDefault.DISCARD))
    store.create(Profile(name="scratch", image="tiny", color="#8e44ad"))
    app = App(paths)
    launcher = LauncherWindow(app, has_tray=False)
    launcher.show()
    await until(app.probe_accel().done)  # the no-KVM banner
    launcher.select("banking")
    launcher.grab().save(str(HERE / "screenshots" / "launcher.png"))
    app.open_context("banking")
    await until(lambda: "banking" in app.windows)
    window = app.windows["banking"]
    window.resize(900, 640)
    await asyncio.sleep(2)
    QTest.keyClicks(window.display, "echo hello from a throwaway VM; uname -sr")
    QTest.keyClick(window.display, Qt.Key.Key_Return)
    await asyncio.sleep(2)
    launcher.refresh()
    window.grab().save(str(HERE / "screenshots" / "session.png"))
    launcher.grab().save(str(HERE / "screenshots" / "launcher-running.png"))
    await app.shutdown()
    return 0


def main() -> int:
    qapp = asyncbridge.create_qapplication(sys.argv[:1])
    qapp.setWindowIcon(app_icon())
    return asyncbridge.run(qapp, shoot)


if __name__ == "__main__":
    sys.exit(main())

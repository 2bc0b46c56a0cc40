"""Screenshots of the launcher and a session window for the docs (run under X, e.g. Xvfb).

    Xvfb :99 & DISPLAY=:99 .venv/bin/python resources/take_screenshots.py

Uses a throwaway BLANKSLATE_HOME whose image store links to the test cache's built tiny
image (``~/.cache/blankslate-tests/home``; run the GUI tests or build it first) and to the
browser image ``make run`` built; the session window shows the browser guest.
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

import platformdirs  # noqa: E402

from sandbox_app.core.contexts import ContextStore, ExitDefault, Network, Profile  # noqa: E402
from sandbox_app.core.storage import Paths  # noqa: E402
from sandbox_app.gui import asyncbridge  # noqa: E402
from sandbox_app.gui.app import App, app_icon  # noqa: E402
from sandbox_app.gui.launcher import LauncherWindow  # noqa: E402

# BLANKSLATE_SCREENSHOT_IMAGES: a folder holding both built images (say, a test cache's).
IMAGES = os.environ.get("BLANKSLATE_SCREENSHOT_IMAGES")
CACHE = (Path(IMAGES) if IMAGES
         else Path.home() / ".cache" / "blankslate-tests" / "home" / "data" / "images")
BROWSER = (CACHE / "browser" if IMAGES
           else Path(platformdirs.user_data_dir("blankslate")) / "images" / "browser")


async def until(cond: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.1)


async def shoot() -> int:
    paths = Paths.from_env().ensure()
    paths.images.mkdir(parents=True, exist_ok=True)
    (paths.images / "tiny").symlink_to(CACHE / "tiny")
    (paths.images / "browser").symlink_to(BROWSER)
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
    app.open_context("personal")
    await until(lambda: "personal" in app.windows)
    window = app.windows["personal"]
    window.resize(1100, 760)  # the 1280x800 guest, scaled to fit
    await asyncio.sleep(3)
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

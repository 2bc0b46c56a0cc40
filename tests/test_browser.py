"""The real browser guest: Debian + Firefox ESR in a cage kiosk, restored from its snapshot.

Building the image takes minutes, so these tests are marked ``browser``: they run in the
default suite when the image is already built (in the test cache, or in the user's own data
dir after ``make run``), and otherwise only with ``-m slow``, which builds it first.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import run_cli
from PySide6.QtGui import QColor, QImage

from sandbox_app.core.contexts import ContextStore, Network, Profile
from sandbox_app.core.guest import ClipboardPolicy
from sandbox_app.core.storage import Paths

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1800)]

GREEN = "#12ab34"
PAGE = ("data:text/html,<title>t</title><body style='margin:0;background:%2312ab34'>"
        "<div style='position:fixed;left:0;top:0;width:200px;height:100px;"
        "background:%23d02020'></div></body>")


@pytest.fixture
def web(browser_paths: Paths) -> str:
    ContextStore(browser_paths).create(Profile(name="web", image="browser",
                                                network=Network.NONE))
    return "web"


def _color(image: QImage, x: int, y: int) -> str:
    return QColor(image.pixel(x, y)).name()


def test_url_screenshot_shows_the_page(web: str, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    proc = run_cli("run", web, "--headless", "--json", "--url", PAGE, "--screenshot", str(shot),
                   "--exec", "ls /home/browser/.mozilla/blankslate/sessionstore-backups "
                             "2>/dev/null | wc -l", timeout=900)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["restore_s"] is not None  # restored from the golden snapshot, not booted
    image = QImage(str(shot))
    assert (image.width(), image.height()) == (1280, 800)
    assert _color(image, 100, 50) == "#d02020"      # the fixed box, top left
    assert _color(image, 900, 300) == GREEN  # page background (the pointer is mid-screen)
    assert _color(image, 1200, 750) == GREEN


def test_restored_browser_shows_the_start_page_not_recovery(web: str, tmp_path: Path) -> None:
    shot = tmp_path / "start.png"
    proc = run_cli("run", web, "--headless", "--json", "--screenshot", str(shot),
                   "--exec", "date +%s", timeout=900)
    assert proc.returncode == 0, proc.stderr
    image = QImage(str(shot))
    # The start page's own background, edge to edge: no crash-recovery or first-run tab.
    for x, y in ((4, 4), (1275, 4), (4, 795), (1275, 795)):
        assert _color(image, x, y) == "#1d2b3a"
    guest_now = int(json.loads(proc.stdout)["exec"][0]["stdout"])
    assert abs(guest_now - time.time()) < 60  # the clock was set after the restore


def test_a_cold_boot_starts_once_the_page_is_drawn_with_no_restore_bar(
        web: str, tmp_path: Path) -> None:
    """``--cold`` boots the golden disk, saved while Firefox ran: the session is started
    only once the start page is on screen (not at the agent's first answer, on a black
    screen), and Firefox offers no "Open previous tabs?" bar for the run it finds."""
    shot = tmp_path / "cold.png"
    proc = run_cli("run", web, "--cold", "--headless", "--json", "--screenshot", str(shot),
                   timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["restore_s"] is None  # booted, not restored
    assert "did not finish starting" not in proc.stderr
    image = QImage(str(shot))
    for x, y in ((4, 4), (1275, 4), (640, 24), (4, 795), (1275, 795)):  # the bar's strip too
        assert _color(image, x, y) == "#1d2b3a"


def test_clipboard_round_trip_through_the_kiosk_wayland_clipboard(browser_paths: Paths) -> None:
    ContextStore(browser_paths).create(Profile(name="cb", image="browser", network=Network.NONE,
                                               clipboard=ClipboardPolicy.BOTH))
    proc = run_cli("run", "cb", "--headless", "--json", "--clipboard-in", "héllo\tfrom host",
                   "--clipboard-out", timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["clipboard"] == "héllo\tfrom host"  # wl-copy → wl-paste


def test_the_persistent_folder_is_the_browser_users_and_outlives_the_session(
        web: str) -> None:
    """In the browser image it is ``/home/browser/Persistent``, owned by the user Firefox
    runs as (its file dialogs show it); a file saved there is in the next session."""
    write = ("stat -c '%U' /home/browser/Persistent; "
             "su -s /bin/sh browser -c 'echo statement > /home/browser/Persistent/s.txt'")
    proc = run_cli("run", web, "--headless", "--json", "--exec", write, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["exec"][0]["stdout"] == "browser\n"
    proc = run_cli("run", web, "--headless", "--json", "--exec",
                   "cat /home/browser/Persistent/s.txt", timeout=900)
    assert json.loads(proc.stdout)["exec"][0]["stdout"] == "statement\n"

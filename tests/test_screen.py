"""Screenshots (QMP screendump) and --url, against the tiny guest in real QEMU."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli
from PySide6.QtGui import QImage


def test_screenshot_saves_what_the_guest_console_shows(tiny_context: str,
                                                       tmp_path: Path) -> None:
    shot = tmp_path / "screen.png"
    proc = run_cli("run", tiny_context, "--headless", "--json", "--screenshot", str(shot))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["screenshot"] == str(shot)
    image = QImage(str(shot))
    assert not image.isNull() and image.width() >= 640 and image.height() >= 400
    # A console, not a blank screen: the text makes several distinct colours appear.
    colors = {image.pixel(x, y) for x in range(0, image.width(), 4)
              for y in range(0, image.height(), 4)}
    assert len(colors) > 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_url_on_an_image_without_a_browser_is_a_clean_error(tiny_context: str) -> None:
    proc = run_cli("run", tiny_context, "--headless", "--url", "https://example.org/")
    assert proc.returncode == 8
    assert proc.stderr.strip().splitlines()[-1] == (
        "blankslate: error: the 'tiny' image has no browser to open pages in")
    assert "Traceback" not in proc.stderr

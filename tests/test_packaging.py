"""Desktop integration files pass the freedesktop validators."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from helpers import REPO

PKG = REPO / "packaging"


@pytest.mark.skipif(not shutil.which("desktop-file-validate"), reason="desktop-file-utils")
def test_desktop_entry_is_valid() -> None:
    proc = subprocess.run(["desktop-file-validate", str(PKG / "org.blankslate.BlankSlate.desktop")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in proc.stdout.lower()


@pytest.mark.skipif(not shutil.which("appstreamcli"), reason="appstream")
def test_appstream_metainfo_is_valid() -> None:
    proc = subprocess.run(["appstreamcli", "validate", "--no-net",
                           str(PKG / "org.blankslate.BlankSlate.metainfo.xml")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

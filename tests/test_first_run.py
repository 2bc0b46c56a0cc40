"""A new user's first commands: no display, a home that cannot be used, and the log file that
keeps what went wrong. Each is one line on stderr and a clean exit code, never a traceback."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import stat
from pathlib import Path

import platformdirs
import pytest
from helpers import run_cli

from sandbox_app import logfile
from sandbox_app.core.storage import Paths
from sandbox_app.desktop import missing_display

NO_DISPLAY = {"DISPLAY": "", "WAYLAND_DISPLAY": "", "QT_QPA_PLATFORM": ""}
HEADLESS_HINT = "use `blankslate run CONTEXT --headless`, or start it from a desktop session"


def _one_line_error(proc: object, code: int) -> str:
    assert proc.returncode == code, proc.stderr  # type: ignore[attr-defined]
    err: str = proc.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("blankslate: error: ")
    return lines[0]


def _log_text(home: Path) -> str:
    return (home / "state" / "log" / logfile.LOG_NAME).read_text()


# ------------------------------------------------------------------ no display


@pytest.mark.parametrize("argv", [[], ["gui"]])
def test_no_display_is_one_line_not_a_qt_abort(home: Path, argv: list[str]) -> None:
    line = _one_line_error(run_cli(*argv, env=NO_DISPLAY), 1)
    assert line == f"blankslate: error: no graphical display: {HEADLESS_HINT}"


def test_a_display_that_does_not_answer_is_named(home: Path) -> None:
    assert not Path("/tmp/.X11-unix/X97").exists()
    line = _one_line_error(run_cli(env={**NO_DISPLAY, "DISPLAY": ":97"}), 1)
    assert "DISPLAY=:97 did not answer" in line
    assert HEADLESS_HINT in line


def test_a_headless_qt_platform_needs_no_display() -> None:
    assert missing_display({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert missing_display({"QT_QPA_PLATFORM": "vnc:size=800x600"}) is None
    assert missing_display({"QT_QPA_PLATFORM": "xcb"}) is not None


def test_a_listening_wayland_socket_is_a_display(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(tmp_path / "wayland-7"))
        server.listen()
        env = {"XDG_RUNTIME_DIR": str(tmp_path), "WAYLAND_DISPLAY": "wayland-7"}
        assert missing_display(env) is None
        # Qt told to use X11 only does not take the Wayland display.
        assert missing_display({**env, "QT_QPA_PLATFORM": "xcb"}) is not None


# ------------------------------------------------------------------ a home that cannot be used


def test_home_that_is_a_file_is_one_line_with_its_path(tmp_path: Path) -> None:
    home = tmp_path / "a-file"
    home.write_text("not a folder")
    line = _one_line_error(run_cli("context", "list", env={"BLANKSLATE_HOME": str(home)}), 1)
    assert line == f"blankslate: error: {home}/config: Not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_home_in_an_unreadable_place_is_one_line_with_its_path(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    try:
        home = locked / "home"
        line = _one_line_error(run_cli("image", "list", env={"BLANKSLATE_HOME": str(home)}), 1)
        assert line == f"blankslate: error: {home}/config: Permission denied"
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------ the log file


def test_a_failing_command_leaves_its_error_in_the_log(home: Path) -> None:
    _one_line_error(run_cli("context", "remove", "nosuch"), 3)
    log_dir = home / "state" / "log"
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((log_dir / logfile.LOG_NAME).stat().st_mode) == 0o600
    text = _log_text(home)
    assert "INFO blankslate: blankslate " in text and ": context remove" in text
    assert "ERROR blankslate: exit 3: unknown context 'nosuch'" in text


def test_debug_raises_the_log_level_and_never_logs_passphrases(home: Path) -> None:
    assert run_cli("context", "create", "vault", "--image", "tiny").returncode == 0
    assert "DEBUG" not in _log_text(home)
    secret = "correct-horse-battery-staple-42"
    proc = run_cli("--debug", "context", "passphrase", "vault", "--passphrase-stdin",
                   input=f"{secret}\n")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("--debug", "context", "passphrase", "vault", "--passphrase-stdin",
                   input=f"{secret}\nanother-{secret}\n")
    assert proc.returncode == 0, proc.stderr
    assert "DEBUG" in _log_text(home)
    for path in (home / "state" / "log").iterdir():
        assert secret not in path.read_text()


def test_the_log_rotates_into_private_files(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logfile, "MAX_BYTES", 300)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)  # start_log_file lowers it
    path = logfile.start_log_file(Paths.from_env().ensure())
    try:
        for i in range(20):
            logging.getLogger("blankslate.test").info("line %d of some length", i)
    finally:
        for handler in root.handlers[:]:
            if isinstance(handler, logging.handlers.RotatingFileHandler):
                root.removeHandler(handler)
                handler.close()
    rotated = sorted(path.parent.iterdir())
    assert len(rotated) == 1 + logfile.BACKUPS
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in rotated)


def test_the_log_dir_is_the_platforms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BLANKSLATE_HOME", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert Paths.from_env().logs == Path(platformdirs.user_log_dir("blankslate"))

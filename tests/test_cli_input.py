"""Bad input gives a one-line message, a documented exit code, no traceback, no leftovers."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from helpers import REPO, run_cli

from sandbox_app.core.storage import Paths


def _one_line_error(proc: object) -> str:
    err: str = proc.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("blankslate: error: ")
    return lines[0]


def test_first_start_creates_personal_and_work(home: Path) -> None:
    proc = run_cli("context", "list", "--json")
    assert proc.returncode == 0
    assert '"personal"' in proc.stdout and '"work"' in proc.stdout


@pytest.mark.parametrize("name", ["a/b", "..", "../x", "bad\x07name", "UPPER", "", "x" * 40,
                                  "evil\n"])
def test_invalid_context_names_are_refused(home: Path, name: str) -> None:
    proc = run_cli("context", "create", name, "--image", "tiny")
    assert proc.returncode == 2
    _one_line_error(proc)
    created = sorted(p.name for p in (home / "config" / "contexts").iterdir())
    assert created == ["personal.toml", "work.toml"]


def test_unknown_context_exit_code(home: Path) -> None:
    proc = run_cli("run", "nosuch", "--headless")
    assert proc.returncode == 3
    assert "unknown context 'nosuch'" in _one_line_error(proc)


def test_unbuilt_image_exit_code(home: Path) -> None:
    assert run_cli("context", "create", "c1", "--image", "tiny").returncode == 0
    proc = run_cli("run", "c1", "--headless")
    assert proc.returncode == 3
    assert "not built yet" in _one_line_error(proc)


def test_bad_color_refused(home: Path) -> None:
    proc = run_cli("context", "create", "c2", "--color", "red")
    assert proc.returncode == 2
    _one_line_error(proc)


def test_duplicate_context_refused(home: Path) -> None:
    assert run_cli("context", "create", "dup").returncode == 0
    proc = run_cli("context", "create", "dup")
    assert proc.returncode == 2
    assert "already exists" in _one_line_error(proc)


def test_context_remove(home: Path) -> None:
    assert run_cli("context", "create", "gone").returncode == 0
    assert run_cli("context", "remove", "gone").returncode == 0
    assert '"gone"' not in run_cli("context", "list", "--json").stdout
    assert not (home / "data" / "contexts" / "gone").exists()


def test_runtime_and_data_dirs_are_private(home: Path) -> None:
    assert run_cli("context", "list").returncode == 0
    paths = Paths.from_env()
    for d in (paths.config, paths.data, paths.state, paths.runtime):
        assert d.stat().st_mode & 0o777 == 0o700


def _at_a_terminal(args: list[str], answers: list[tuple[str, str]]) -> tuple[int, str]:
    """Run ``blankslate ARGS`` on a pseudo-terminal (getpass reads /dev/tty), typing each
    answer when its prompt shows; returns the exit code and everything printed."""
    master, slave = os.openpty()

    def controlling_tty() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox_app", *args], cwd=REPO, stdin=slave, stdout=slave,
        stderr=slave, preexec_fn=controlling_tty)  # noqa: PLW1509  (no threads here)
    os.close(slave)
    seen = ""
    try:
        for prompt, answer in answers:
            deadline = time.monotonic() + 30
            while prompt not in seen:
                assert time.monotonic() < deadline, f"no prompt {prompt!r}: {seen!r}"
                if select.select([master], [], [], 0.2)[0]:
                    seen += os.read(master, 4096).decode(errors="replace")
            os.write(master, answer.encode() + b"\n")
        code = proc.wait(timeout=60)
        with contextlib.suppress(OSError):
            while select.select([master], [], [], 0.2)[0]:
                chunk = os.read(master, 4096)
                if not chunk:
                    break
                seen += chunk.decode(errors="replace")
    finally:
        os.close(master)
    return code, seen


def test_a_new_passphrase_is_asked_twice_at_the_terminal(home: Path) -> None:
    run_cli("context", "list")
    code, out = _at_a_terminal(["context", "passphrase", "work"],
                               [("New passphrase", "one"), ("Repeat", "two")])
    assert code == 2 and "differ" in out, out
    assert not (home / "data" / "keys" / "work.key.json").exists(), "nothing changed"
    code, out = _at_a_terminal(["context", "passphrase", "work"],
                               [("New passphrase", "one"), ("Repeat", "one")])
    assert code == 0, out
    assert run_cli("run", "work", "--headless", "--exec", "true").returncode == 7  # locked

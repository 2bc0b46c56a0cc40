"""Bad input gives a one-line message, a documented exit code, no traceback, no leftovers."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_cli

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

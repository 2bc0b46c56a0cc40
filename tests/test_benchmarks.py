"""Every benchmark starts (its --help), and their one set-up helper finds a built image,
or says in one line that it could not build one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from sandbox_app.core.images.store import is_built

BENCH = REPO / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def _bench(script: str, *args: str, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, check=False, timeout=120, cwd=REPO,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen", **(env or {})})


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_starts(script: str) -> None:
    proc = _bench(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")


def test_setup_finds_the_built_image(shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("BLANKSLATE_HOME", str(shared_home))
    from _home import bench_home  # noqa: PLC0415 (benchmarks/ is no package)

    with bench_home("tiny") as paths:
        assert Path(os.environ["BLANKSLATE_HOME"]) != shared_home
        assert (paths.images / "tiny").resolve() == (shared_home / "data/images/tiny").resolve()
        assert is_built(paths.images / "tiny", "tiny")
    assert os.environ["BLANKSLATE_HOME"] == str(shared_home)


def test_setup_that_cannot_build_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "no-recipes").mkdir()
    proc = _bench("startup.py", "--runs", "1",
                  env={"BLANKSLATE_HOME": str(tmp_path / "home"),
                       "BLANKSLATE_RECIPES": str(tmp_path / "no-recipes")})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == \
        "benchmark set-up: image 'tiny' could not be built (exit 5)"


def test_setup_names_an_unknown_image(tmp_path: Path) -> None:
    proc = _bench("startup.py", "--image", "nosuch", env={"BLANKSLATE_HOME": str(tmp_path)})
    assert proc.returncode == 1
    assert proc.stderr.strip() == "benchmark set-up: unknown image 'nosuch' (one of: tiny, browser)"

"""What a user installs: desktop files that pass the freedesktop validators, a wheel that
carries the image recipes and the icons, --version and --help, the man page and the shell
completions made from the parser."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from xml.etree import ElementTree

import pytest
from helpers import REPO, run_cli

import sandbox_app
from sandbox_app.clihelp import ENVIRONMENT, EXIT_CODES
from sandbox_app.core.images.recipe import recipe_digest

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


def test_metainfo_shows_the_readmes_screenshots_and_the_projects_urls() -> None:
    root = ElementTree.parse(PKG / "org.blankslate.BlankSlate.metainfo.xml").getroot()
    urls = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]
    assert root.findtext("url[@type='homepage']") == urls["Homepage"]
    assert root.findtext("url[@type='bugtracker']") == urls["Issues"]
    shots = [e.text or "" for e in root.iter("image")]
    prefix = urls["Homepage"] + "/raw/main/"
    assert shots and all(s.startswith(prefix) for s in shots)
    in_readme = set(re.findall(r"\]\((resources/screenshots/[^)]+)\)",
                               (REPO / "README.md").read_text()))
    assert {s.removeprefix(prefix) for s in shots} >= in_readme
    assert all((REPO / s.removeprefix(prefix)).is_file() for s in shots)


# ------------------------------------------------------------------ the wheel, as pip installs it

WHEEL_CHECK = """
import json, os
from PySide6.QtGui import QGuiApplication
app = QGuiApplication([])
import sandbox_app
from sandbox_app.core.images.recipe import recipe_digest, recipes_dir
from sandbox_app.gui.app import ICONS, app_icon
print(json.dumps({
    "package": sandbox_app.__file__, "recipes": str(recipes_dir()), "icons": str(ICONS),
    "digests": {name: recipe_digest(name) for name in ("tiny", "browser")},
    "icon_drawn": not app_icon().pixmap(32, 32).isNull(),
}))
"""


def _run(*argv: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          check=False, timeout=120, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the checkout (offline, no build isolation) and installed
    into a fresh venv; its dependencies are seen through a .pth (no download)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("sandbox_app", "vm_images"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", root / "dist", src)
    (wheel,) = (root / "dist").glob("blankslate-*.whl")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q",
         "--no-deps", "--no-index", wheel)
    purelib = _run(venv / "bin" / "python", "-c",
                   "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    (Path(purelib) / "blankslate-test-deps.pth").write_text(sysconfig.get_paths()["purelib"])
    return venv


def _elsewhere(venv: Path, home: Path) -> dict[str, str]:
    """A user's environment: no checkout on the path, no recipes override."""
    return {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home),
            "BLANKSLATE_HOME": str(home / "bs"), "BLANKSLATE_KEYRING": "off",
            "QT_QPA_PLATFORM": "offscreen"}


def test_installed_wheel_carries_recipes_and_icons(installed: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    proc = _run(installed / "bin" / "python", "-c", WHEEL_CHECK, cwd=tmp_path,
                env=_elsewhere(installed, tmp_path))
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("package", "recipes", "icons"):
        assert Path(found[key]).is_relative_to(installed), (key, found[key])
    monkeypatch.setenv("BLANKSLATE_RECIPES", str(REPO / "vm_images"))
    # Same digest: every file of each recipe and of the builder library is in the wheel.
    assert found["digests"] == {name: recipe_digest(name) for name in ("tiny", "browser")}
    assert found["icon_drawn"]


def test_installed_command_runs_from_another_directory(installed: Path, tmp_path: Path) -> None:
    env = _elsewhere(installed, tmp_path)
    version = _run(installed / "bin" / "blankslate", "--version", cwd=tmp_path, env=env)
    assert version.stdout.strip() == f"blankslate {sandbox_app.__version__}"
    listed = _run(installed / "bin" / "blankslate", "image", "list", "--json",
                  cwd=tmp_path, env=env)
    assert json.loads(listed.stdout) == []


# ------------------------------------------------------------------ version, help, man, completion


def test_version_is_the_package_version() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"blankslate {importlib.metadata.version('blankslate')}"
    assert importlib.metadata.version("blankslate") == sandbox_app.__version__


def test_help_tells_defaults_exit_codes_and_environment() -> None:
    text = run_cli("--help").stdout
    for needle in ("exit codes:", "environment:", "blankslate.log", "--debug", "--version"):
        assert needle in text
    for name, _ in ENVIRONMENT:
        assert name in text
    for code, _ in EXIT_CODES:
        assert f"  {code:>3}  " in text
    create = " ".join(run_cli("context", "create", "--help").stdout.split())
    assert "(default: host-to-guest)" in create
    assert "--memory MIB guest RAM (default: image's)" in create


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    _run(sys.executable, PKG / "generate.py", out, cwd=REPO)
    return out


def test_man_page_is_made_from_the_parser(generated: Path) -> None:
    man = (generated / "blankslate.1").read_text()
    assert man.startswith('.TH BLANKSLATE "1"')
    assert f"Blank Slate {sandbox_app.__version__}" in man
    for command in ("image", "context", "session", "run", "open"):
        assert f"blankslate {command}" in man.replace(r"\fR \fI\,", " ").replace(r"\fB", "")
    assert "BLANKSLATE_HOME" in man
    if shutil.which("man"):
        shown = subprocess.run(["man", "-l", str(generated / "blankslate.1")], check=False,
                               capture_output=True, text=True, env={**os.environ,
                                                                     "MANWIDTH": "100"})
        if shown.returncode == 0 and shown.stdout:  # groff may be missing
            assert "exit codes" in shown.stdout


@pytest.mark.parametrize(("words", "expected"), [
    (["ima"], {"image"}),
    (["image", "build", ""], {"tiny", "browser"}),
    (["context", "create", "x", "--net"], {"--network"}),
])
def test_bash_completion_completes(generated: Path, words: list[str],
                                   expected: set[str]) -> None:
    line = " ".join(["blankslate", *words])
    script = (f"source {generated / 'blankslate.bash'}; COMP_WORDS=(blankslate "
              + " ".join(f"'{w}'" for w in words)
              + f"); COMP_CWORD={len(words)}; COMP_LINE='{line}'; COMP_POINT={len(line)}; "
              "_shtab_blankslate; printf '%s\\n' \"${COMPREPLY[@]}\"")
    proc = _run("bash", "-c", script)
    assert set(proc.stdout.split()) == expected


def test_zsh_completion_is_a_completion_function(generated: Path) -> None:
    text = (generated / "_blankslate").read_text()
    assert text.startswith("#compdef blankslate")
    if shutil.which("zsh"):
        _run("zsh", "-n", generated / "_blankslate")

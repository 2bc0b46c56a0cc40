"""Shared fixtures: an isolated BLANKSLATE_HOME per test, and one built tiny image.

Building the tiny image (and its golden snapshot point) takes tens of seconds, so it is built
once per machine into a cache (``BLANKSLATE_TEST_CACHE``, default ``~/.cache/blankslate-tests``)
and every test's home links to it. The image store rebuilds it when its recipe changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest

from sandbox_app.core.contexts import ContextStore, Profile
from sandbox_app.core.images import ImageStore, is_built
from sandbox_app.core.paths import Paths


def _cache_root() -> Path:
    env = os.environ.get("BLANKSLATE_TEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "blankslate-tests"


def _build_in_cache(image: str) -> Path:
    """Build ``image`` (if missing or stale) into the test cache's home; return that home."""
    home = _cache_root() / "home"
    old = os.environ.get("BLANKSLATE_HOME")
    os.environ["BLANKSLATE_HOME"] = str(home)
    try:
        asyncio.run(ImageStore(Paths.from_env().ensure()).build(image))
    finally:
        if old is None:
            os.environ.pop("BLANKSLATE_HOME", None)
        else:
            os.environ["BLANKSLATE_HOME"] = old
    return home


@pytest.fixture(scope="session")
def shared_home() -> Path:
    """A BLANKSLATE_HOME holding the built tiny image; shared by all tests (read-mostly)."""
    os.environ["BLANKSLATE_ACCEL"] = "tcg"
    return _build_in_cache("tiny")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, isolated BLANKSLATE_HOME (no images)."""
    h = tmp_path / "home"
    monkeypatch.setenv("BLANKSLATE_HOME", str(h))
    monkeypatch.setenv("BLANKSLATE_ACCEL", "tcg")
    monkeypatch.setenv("BLANKSLATE_KEYRING", "off")  # never touch the user's keyring
    return h


@pytest.fixture
def paths(home: Path) -> Iterator[Paths]:
    p = Paths.from_env().ensure()
    yield p
    # A long home path puts the runtime dir in /tmp: leave no empty one behind.
    with contextlib.suppress(OSError):
        p.runtime.rmdir()


@pytest.fixture
def tiny_paths(paths: Paths, shared_home: Path) -> Paths:
    """An isolated home whose image store is the shared, built one."""
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.images.symlink_to(shared_home / "data" / "images")
    return paths


@pytest.fixture
def tiny_context(tiny_paths: Paths) -> str:
    ContextStore(tiny_paths).create(Profile(name="t1", image="tiny", color="#112233"))
    return "t1"


def _built_browser() -> Path | None:
    """A built, up-to-date browser image: the test cache's, or the user's own (make run)."""
    for images in (_cache_root() / "home" / "data" / "images",
                   Path(platformdirs.user_data_dir("blankslate")) / "images"):
        if is_built(images / "browser", "browser"):
            return images / "browser"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``browser`` tests are part of the default run only when the image is already built.

    The GUI tests run last: once a QApplication exists, pytest-qt processes Qt events
    after every test, and nothing of the GUI tests should be left to meet the others.
    """
    items.sort(key=lambda item: item.path.name.startswith("test_gui"))
    if _built_browser() is None:
        for item in items:
            if item.get_closest_marker("browser"):
                item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def browser_image() -> Path:
    built = _built_browser()
    if built is not None:
        return built
    # Only with -m slow: build it (minutes) into the test cache.
    return _build_in_cache("browser") / "data" / "images" / "browser"


@pytest.fixture
def browser_paths(paths: Paths, browser_image: Path) -> Paths:
    """An isolated home whose image store holds the shared, built browser image."""
    paths.images.mkdir(parents=True, exist_ok=True)
    (paths.images / "browser").symlink_to(browser_image)
    return paths

"""Shared fixtures: an isolated BLANKSLATE_HOME per test, and the built images.

Building the images (and their golden snapshot points) takes from seconds (tiny) to minutes
(browser), so each is built once per machine into a cache (``BLANKSLATE_TEST_CACHE``,
default ``~/.cache/blankslate-tests``) and every test's home links to it. The image store
rebuilds an image when its recipe changes.

``make test`` runs the suite through ``tests/run_suite.py``: everything as an unprivileged
user, then the tests marked ``root`` (network namespaces, loop mounts) as root — and those
run the app itself as that same unprivileged user (``tests/world.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import pytest
from world import World, make_world, unprivileged_user, user_dir

from sandbox_app.core.contexts import ContextStore, Profile
from sandbox_app.core.images import ImageStore, is_built
from sandbox_app.core.storage import Paths


def _cache_root() -> Path:
    env = os.environ.get("BLANKSLATE_TEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "blankslate-tests"


def _build_in_cache(image: str) -> Path:
    """Build ``image`` (if missing or stale) into the test cache's home; return that home."""
    home = _cache_root() / "home"
    if unprivileged_user() is not None:
        # The root part of the suite uses the images the test user built (run_suite.py).
        if not is_built(home / "data" / "images" / image, image):
            pytest.fail(f"the {image} image is not built in {home}: run the suite with "
                        "tests/run_suite.py (make test)")
        return home
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
    # The app rebuilds images older than a week; tests share built images: never here.
    (h / "config").mkdir(parents=True, mode=0o700)
    (h / "config" / "app.toml").write_text("image_update_days = 0\n")
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


def pytest_report_header() -> str:
    user = pwd.getpwuid(os.geteuid())
    role = ("root: only the tests marked 'root' belong here; the app under test runs as "
            f"{os.environ.get('BLANKSLATE_TEST_USER') or '(no test user set!)'}"
            if os.geteuid() == 0 else "an unprivileged user")
    return f"tests run as {user.pw_name} (uid {user.pw_uid}), {role}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The GUI tests run last: once a QApplication exists, pytest-qt processes Qt events
    after every test, and nothing of the GUI tests should be left to meet the others."""
    items.sort(key=lambda item: item.path.name.startswith("test_gui"))


@pytest.fixture(scope="session")
def browser_image() -> Path:
    """The built browser image (built now, into the test cache, if missing or stale)."""
    built = _built_browser()
    if built is not None:
        return built
    return _build_in_cache("browser") / "data" / "images" / "browser"


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    """The test hosts' network namespaces (root: see tests/world.py)."""
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the suite with 'make test' "
                    "(tests/run_suite.py runs the 'root' tests with sudo)")
    yield from make_world()


@pytest.fixture
def user_home(browser_image: Path, shared_home: Path) -> Iterator[Path]:
    """A BLANKSLATE_HOME owned by the unprivileged test user, with both images."""
    base = user_dir("bs-j-")
    home = base / "h"
    images = home / "data" / "images"
    images.mkdir(parents=True, mode=0o700)
    (images / "browser").symlink_to(browser_image)
    (images / "tiny").symlink_to(shared_home / "data" / "images" / "tiny")
    user = unprivileged_user()
    for d in (home, home / "data", images):
        d.chmod(0o700)
        if user is not None:
            os.chown(d, user.pw_uid, user.pw_gid)
    try:
        yield home
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def browser_paths(paths: Paths, browser_image: Path) -> Paths:
    """An isolated home whose image store holds the shared, built browser image."""
    paths.images.mkdir(parents=True, exist_ok=True)
    (paths.images / "browser").symlink_to(browser_image)
    return paths

"""Image updates (real image build, real QEMU under TCG, the tiny guest, through the CLI).

The home gets its own copy of the built tiny image (hard links), so the rebuild touches
nothing shared.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import run_cli

from sandbox_app.core.storage import Paths

pytestmark = pytest.mark.timeout(900)


def _run(context: str, *cmds: str, on_exit: str = "discard") -> tuple[list[str], dict, str]:  # type: ignore[type-arg]
    args = ["run", context, "--headless", "--json", "--on-exit", on_exit]
    for c in cmds:
        args += ["--exec", c]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    return [e["stdout"] for e in report["exec"]], report, proc.stderr


def _snapshot(paths: Paths, context: str) -> str:
    return str(json.loads((paths.contexts_data / context / "current.json").read_text())
               ["snapshot"])


@pytest.fixture
def own_tiny(paths: Paths, shared_home: Path) -> Paths:
    """A home with a private copy of the built tiny image."""
    paths.images.mkdir(parents=True, exist_ok=True)
    shutil.copytree(shared_home / "data" / "images" / "tiny", paths.images / "tiny",
                    copy_function=_link_or_copy)
    return paths


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def test_update_keeps_kept_contexts_on_their_point_until_reset(own_tiny: Paths) -> None:
    paths = own_tiny
    for name in ("kept", "fresh"):
        assert run_cli("context", "create", name, "--image", "tiny",
                       "--data-size", "32M").returncode == 0
    _run("kept", "echo on-old-image > /root/k; echo folder > /root/Persistent/p",
         on_exit="keep")
    old_point = _snapshot(paths, "kept")

    r = run_cli("image", "update", "tiny", timeout=900)
    assert r.returncode == 0, r.stderr
    points = {p.name: p for p in (paths.images / "tiny" / "snapshots").iterdir()}
    assert (points[old_point] / "base" / "root.qcow2").exists(), "retired with its base"
    new_points = [n for n, p in points.items() if not (p / "base").exists()]
    assert len(new_points) == 1 and new_points[0] != old_point

    # The kept context starts where it was kept, on its earlier build (restored, not booted).
    out, report, err = _run("kept", "cat /root/k /root/Persistent/p")
    assert out == ["on-old-image\nfolder\n"] and report["restore_s"] is not None, err
    assert "booting the kept disk instead" not in err
    listed = {c["name"]: c for c in json.loads(run_cli("context", "list", "--json").stdout)}
    assert "updates available" in listed["kept"]["image_note"]
    assert listed["fresh"]["image_note"] == ""
    # A golden context's next session is on the new point.
    _run("fresh", "true", on_exit="keep")
    assert _snapshot(paths, "fresh") == new_points[0]

    # Reset: the kept state goes, the persistent folder stays, the old point is collected.
    r = run_cli("context", "reset", "kept")
    assert r.returncode == 0, r.stderr
    out, _, _ = _run("kept", "test -e /root/k && echo k || echo no-k; cat /root/Persistent/p")
    assert out == ["no-k\nfolder\n"]
    assert not (paths.images / "tiny" / "snapshots" / old_point).exists()
    assert (paths.images / "tiny" / "snapshots" / new_points[0]).exists()


def test_the_app_updates_an_image_older_than_a_week(own_tiny: Paths, qapp: object) -> None:
    from sandbox_app.gui import asyncbridge  # noqa: PLC0415  (Qt only for this test)
    from sandbox_app.gui.app import App  # noqa: PLC0415

    (own_tiny.config / "app.toml").write_text("image_update_days = 7\n")
    before = {p.name for p in (own_tiny.images / "tiny" / "snapshots").iterdir()}
    loop = asyncbridge.install_loop(qapp)  # type: ignore[arg-type]
    try:
        app = App(own_tiny)
        built = json.loads((own_tiny.images / "tiny" / "manifest.json").read_text())["built_at"]
        assert app.update_old_images(now=built + 6 * 86400) == []  # not a week old yet
        assert len(app.update_old_images(now=built + 8 * 86400)) == 1
        asyncbridge.complete(app.jobs.wait_all(), 600)
    finally:
        loop.close()
    after = {p.name for p in (own_tiny.images / "tiny" / "snapshots").iterdir()}
    assert after - before, "a new snapshot point for the new build"

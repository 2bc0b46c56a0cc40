"""Crash safety: kill -9 at random points of start, keep and discard; disk full; physical wipe.

The default suite kills at a few points; ``-m slow`` runs the full loop (see KILL_POINTS_SLOW).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, run_cli

from sandbox_app.core.contexts import ContextStore, Profile
from sandbox_app.core.session import Session
from sandbox_app.core.storage import Paths

KILL_POINTS_DEFAULT = 4
KILL_POINTS_SLOW = 24


def _qemu_pids_for(home: Path) -> list[int]:
    """QEMU processes whose command line mentions this home or its runtime dir."""
    paths = Paths.from_env()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmd and (str(home).encode() in cmd
                                      or str(paths.runtime).encode() in cmd):
            status = (proc / "status").read_text()
            if "zombie" not in status:
                pids.append(int(proc.name))
    return pids


def _assert_clean_and_valid(paths: Paths, context: str) -> None:
    assert run_cli("context", "list").returncode == 0  # any command recovers
    home = paths.data.parent
    deadline = time.monotonic() + 10
    while _qemu_pids_for(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _qemu_pids_for(home) == [], "orphan QEMU"
    assert (list(paths.runtime.iterdir()) if paths.runtime.exists() else []) == []
    assert list((paths.state / "sessions").glob("*.json")) == []
    ctx_dir = paths.contexts_data / context
    manifest = json.loads((ctx_dir / "current.json").read_text()) \
        if (ctx_dir / "current.json").exists() else {"layers": [], "state": None}
    referenced = {x["file"] for x in manifest["layers"]}
    if manifest["state"]:
        referenced.add(manifest["state"]["file"])
        if manifest["state"].get("ram"):
            referenced.add(manifest["state"]["ram"])
    leftovers = ({p.name for p in ctx_dir.iterdir()} - referenced
                 - {"current.json", "persistent.qcow2", "persistent.key"})
    assert leftovers == set(), leftovers
    check = run_cli("context", "check", context)
    assert check.returncode == 0, check.stderr
    # The context is either its old or its new state, and it runs.
    r = run_cli("run", context, "--headless", "--json", "--exec", "ls /root")
    assert r.returncode == 0, r.stderr


def _kill_loop(paths: Paths, context: str, points: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(points):
        on_exit = rng.choice(["keep", "discard"])
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox_app", "run", context, "--headless",
             "--on-exit", on_exit, "--exec", f"echo {i} > /root/f{i}; sync"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.2, 4.0))  # start, run, keep or discard
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _assert_clean_and_valid(paths, context)


def test_kill_9_at_random_points_leaves_a_valid_context(tiny_context: str,
                                                          tiny_paths: Paths) -> None:
    _kill_loop(tiny_paths, tiny_context, KILL_POINTS_DEFAULT, seed=1)


@pytest.mark.slow
def test_kill_9_loop_slow(tiny_context: str, tiny_paths: Paths) -> None:
    _kill_loop(tiny_paths, tiny_context, KILL_POINTS_SLOW, seed=2)


def test_kill_9_of_qemu_during_a_session(tiny_context: str, tiny_paths: Paths) -> None:
    async def scenario() -> None:
        ctx = ContextStore(tiny_paths).get(tiny_context)
        session = await Session.start(tiny_paths, ctx)
        assert session.machine is not None and session.machine.pid
        os.kill(session.machine.pid, signal.SIGKILL)
        with pytest.raises(Exception, match=r"guest|QEMU|VM|session"):
            await session.exec("true", timeout=5)
        report = await session.discard()
        assert report.on_exit == "discard"

    asyncio.run(scenario())
    _assert_clean_and_valid(tiny_paths, tiny_context)


# ------------------------------------------------------------------------ loop filesystems

# Loop mounts need root: these run in the suite's root part (tests/run_suite.py), with the
# engine in-process as root; every journey of the app itself runs as the unprivileged user.
needs_root = pytest.mark.root


@pytest.fixture
def loop_fs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A fresh ext4 filesystem on a loop device: (mount point, backing image file)."""
    def make(size_mib: int) -> tuple[Path, Path]:
        img = tmp_path / "fs.img"
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["truncate", "-s", f"{size_mib}M", str(img)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-b", "4096", str(img)], check=True)
        subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
        made.append(mnt)
        return mnt, img

    made: list[Path] = []
    yield make  # type: ignore[misc]
    for mnt in made:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _home_on(mnt: Path, shared_home: Path, monkeypatch: pytest.MonkeyPatch) -> Paths:
    home = mnt / "home"
    monkeypatch.setenv("BLANKSLATE_HOME", str(home))
    paths = Paths.from_env().ensure()
    paths.images.symlink_to(shared_home / "data" / "images")
    ContextStore(paths).create(Profile(name="lc", image="tiny"))
    return paths


def _extents(path: Path) -> list[tuple[int, int]]:
    """Physical (byte offset, length) of a file's extents, from FIEMAP (filefrag -e)."""
    out = subprocess.run(["filefrag", "-e", "-b4096", str(path)], capture_output=True,
                         text=True, check=True).stdout
    extents = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(":")]
        if len(parts) >= 4 and parts[0].isdigit():
            phys = parts[2].split("..")
            start, end = int(phys[0]), int(phys[1])
            extents.append((start * 4096, (end - start + 1) * 4096))
    return extents


@needs_root
def test_discarded_overlay_blocks_read_back_as_zeros(
        loop_fs: object, shared_home: Path, home: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    mnt, img = loop_fs(96)  # type: ignore[operator]
    paths = _home_on(mnt, shared_home, monkeypatch)

    async def scenario() -> list[tuple[int, int]]:
        ctx = ContextStore(paths).get("lc")
        session = await Session.start(paths, ctx)
        await session.exec("head -c 6000000 /dev/urandom > /root/blob; sync")
        assert session.overlay is not None
        os.sync()
        extents = _extents(session.overlay.path)
        await session.discard()
        return extents

    extents = asyncio.run(scenario())
    assert sum(length for _, length in extents) >= 6_000_000
    subprocess.run(["umount", str(mnt)], check=True)
    with open(img, "rb") as f:
        for offset, length in extents:
            f.seek(offset)
            assert f.read(length) == bytes(length), f"non-zero data left at {offset}"


@needs_root
def test_disk_full_during_keep_leaves_the_context_unchanged(
        loop_fs: object, shared_home: Path, home: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    mnt, _img = loop_fs(24)  # type: ignore[operator]
    paths = _home_on(mnt, shared_home, monkeypatch)
    # Fill the filesystem so the overlay fits but the saved RAM state cannot: the guest
    # dirties 24 MiB of RAM (a delta keep stores what changed), 12 MiB are free.
    filler = mnt / "filler"
    free = shutil.disk_usage(mnt).free
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\1" * max(0, free - 12 * 2**20))
    proc = run_cli("run", "lc", "--headless", "--on-exit", "keep", "--exec",
                   "echo x > /root/x; sync; mkdir -p /run/f && mount -t tmpfs f /run/f && "
                   "dd if=/dev/urandom of=/run/f/x bs=1M count=24 2>/dev/null")
    assert proc.returncode == 6, proc.stderr
    assert "Traceback" not in proc.stderr and "disk full" in proc.stderr.lower()
    ctx_dir = paths.contexts_data / "lc"
    names = {p.name for p in ctx_dir.iterdir()} - {"persistent.qcow2", "persistent.key"}
    assert sorted(names) in ([], ["current.json"])
    filler.unlink()
    r = run_cli("run", "lc", "--headless", "--json", "--exec", "ls /root")
    assert r.returncode == 0 and "x" not in json.loads(r.stdout)["exec"][0]["stdout"].split()

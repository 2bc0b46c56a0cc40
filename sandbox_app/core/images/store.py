"""The image store: recipe outputs, and golden snapshot points made from them.

Layout under ``data/images/<name>/``::

    recipe.json vmlinuz initrd.img root.qcow2   the recipe's output (read-only base)
    manifest.json                               sha256 of those files, build time
    snapshots/<key>/                            one golden snapshot point per machine identity
        golden.qcow2  disk as it was at the instant of the save (read-only from then on)
        ram.img       guest RAM (template: sessions map it copy-on-write, it never changes)
        state.bin     device state (saved with x-ignore-shared, so no RAM in it)
        snapshot.json checksums, QEMU version, machine identity

A snapshot point is (disk, RAM) saved at one instant: the RAM holds the guest's page cache,
so the disk under a restored state must be exactly the disk it was saved with. Its key is the
machine identity (QEMU version, accelerator, CPU, memory, devices): when any of that changes,
the old snapshot cannot be restored, and a new one is made from the base image instead of
crashing or silently corrupting the guest.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..errors import ImageError, NotFoundError
from ..progress import Progress, no_progress
from ..storage import Paths, atomic_write_json, fsync_dir, private_dir, validate_name
from ..vm import (
    Accel,
    MachineSpec,
    probe_kvm,
    qemu_version,
)
from .recipe import RECIPES, Recipe, recipe_digest, recipes_dir, sha256_file
from .snapshot import RETIRED_BASE, SnapshotPoint, make_snapshot_point

log = logging.getLogger(__name__)

_BASE_FILES = ("vmlinuz", "initrd.img", "root.qcow2")

class Image:
    """A built image: the base files plus its snapshot points."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = directory.name

    @property
    def recipe(self) -> Recipe:
        return Recipe.load(self.directory / "recipe.json")

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def base(self) -> Path:
        return self.directory / "root.qcow2"

    def manifest(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.directory / "manifest.json").read_text())
            return data
        except (OSError, ValueError) as exc:
            raise ImageError(f"image '{self.name}' is incomplete or corrupt: rebuild it") from exc

    def verify(self) -> None:
        """Full check of the base files against the manifest (slow: reads everything)."""
        sums = self.manifest()["sha256"]
        for name in _BASE_FILES:
            path = self.directory / name
            if not path.exists() or sha256_file(path) != sums[name]:
                raise ImageError(f"image '{self.name}': {name} is missing or corrupt: rebuild it")

    def machine_spec(self, memory_mib: int | None = None, **kw: Any) -> MachineSpec:
        r = self.recipe
        return MachineSpec(
            kernel=kw.pop("kernel", self.kernel),
            initrd=kw.pop("initrd", self.initrd),
            append=r.append,
            memory_mib=memory_mib or r.memory_mib,
            cpus=r.cpus,
            display=r.display,
            disk=(),
            **kw,
        )

    def snapshot_point(self, identity: str) -> SnapshotPoint:
        """The newest snapshot point made for this machine identity (may not exist yet).

        Points are never replaced in place: kept contexts' layers sit on a point's
        golden.qcow2, so a rebuilt point gets a new directory (``<identity>-<n>``).
        """
        builds = sorted(
            (int(d.name.rsplit("-", 1)[1]), d)
            for d in (self.directory / "snapshots").glob(f"{identity[:16]}-*")
            if d.is_dir() and d.name.rsplit("-", 1)[1].isdigit()
            and not SnapshotPoint(d, identity).retired
        )
        if builds:
            return SnapshotPoint(builds[-1][1], identity)
        # The first for this build: after every number a retired point has taken.
        taken = [int(d.name.rsplit("-", 1)[1])
                 for d in (self.directory / "snapshots").glob(f"{identity[:16]}-*")
                 if d.name.rsplit("-", 1)[1].isdigit()]
        n = max(taken, default=0) + 1
        return SnapshotPoint(self.directory / "snapshots" / f"{identity[:16]}-{n}", identity)

    def points(self) -> list[SnapshotPoint]:
        """Every snapshot point of this image (current and retired)."""
        return [self.snapshot_dir(d.name) for d in sorted((self.directory / "snapshots").glob("*"))
                if d.is_dir() and not d.name.endswith(".tmp")]

    @property
    def built_at(self) -> float:
        return float(self.manifest().get("built_at", 0.0))

    def snapshot_dir(self, name: str) -> SnapshotPoint:
        """A snapshot point by directory name (as a context manifest records it)."""
        directory = self.directory / "snapshots" / name
        try:
            identity = str(json.loads((directory / "snapshot.json").read_text())["identity"])
        except (OSError, ValueError, KeyError):
            identity = ""
        return SnapshotPoint(directory, identity)

    def size_bytes(self) -> int:
        return sum(
            p.stat().st_blocks * 512 for p in self.directory.rglob("*") if p.is_file()
        )


class ImageStore:
    """All images under ``data/images``."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.root = paths.images

    def get(self, name: str) -> Image:
        validate_name(name, "image name")
        img = Image(self.root / name)
        if not (img.directory / "manifest.json").exists():
            if name in RECIPES:
                raise NotFoundError(
                    f"image '{name}' is not built yet: run 'blankslate image build {name}'"
                )
            raise NotFoundError(f"unknown image '{name}' (known: {', '.join(RECIPES)})")
        return img

    def list(self) -> list[Image]:
        if not self.root.is_dir():
            return []
        return [Image(d) for d in sorted(self.root.iterdir()) if (d / "manifest.json").exists()]

    def accel_for(self, image: Image) -> Accel:
        return probe_kvm(image.kernel, self.paths.state / "kvm-probe.json")

    async def build(self, name: str, *, force: bool = False,
                    progress: Progress = no_progress) -> Image:
        """Run the recipe (if needed) and make the default golden snapshot point."""
        validate_name(name, "image name")
        if name not in RECIPES:
            raise NotFoundError(f"unknown image '{name}' (known: {', '.join(RECIPES)})")
        target = self.root / name
        async with self._locked(name):
            if force or not is_built(target, name):
                await self._run_recipe(name, target, progress)
        image = Image(target)
        accel = self.accel_for(image)
        await self.ensure_snapshot(image, accel, progress=progress, force=force)
        return image

    @contextlib.asynccontextmanager
    async def _locked(self, name: str) -> AsyncIterator[None]:
        """One builder per image across processes (another blankslate may be building)."""
        private_dir(self.root)
        fd = os.open(self.root / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.2)
            yield
        finally:
            os.close(fd)

    async def _run_recipe(self, name: str, target: Path, progress: Progress) -> None:
        script = recipes_dir() / name / "build.py"
        if not script.exists():
            raise ImageError(f"recipe for '{name}' not found at {script}")
        private_dir(self.root)
        work = self.root / f".{name}.building"
        cache = private_dir(self.paths.cache / name)
        shutil.rmtree(work, ignore_errors=True)
        private_dir(work)
        # Debian keeps mke2fs and friends in /usr/sbin and /sbin, off a normal user's PATH.
        path = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), "--out", str(work), "--cache", str(cache),
            stdin=asyncio.subprocess.DEVNULL, env={**os.environ, "PATH": path},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        err_task = asyncio.create_task(_tail(proc.stderr), name=f"recipe-{name}-stderr")
        try:
            assert proc.stdout is not None
            async for line in proc.stdout:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    ev = json.loads(line)
                    frac = ev.get("fraction")
                    # The recipe is the first 85% of a build; the snapshot the rest.
                    progress(f"{name}: {ev['phase']}", None if frac is None else 0.85 * frac)
            rc = await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()
            shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            tail = await err_task
        if rc != 0 or not (work / "recipe.json").exists():
            shutil.rmtree(work, ignore_errors=True)
            last = tail[-1] if tail else f"exit code {rc}"
            raise ImageError(f"building image '{name}' failed: {last}")
        progress(f"{name}: checksums", 0.85)
        sums = {f: sha256_file(work / f) for f in _BASE_FILES}
        for f in _BASE_FILES:
            os.chmod(work / f, 0o444)
        atomic_write_json(work / "manifest.json", {
            "name": name, "built_at": time.time(), "sha256": sums,
            "recipe_sha256": recipe_digest(name),
        })
        old = self.root / f".{name}.old"
        if target.exists():
            _retire_points(target, work)
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        work.rename(target)
        fsync_dir(self.root)
        shutil.rmtree(old, ignore_errors=True)

    def ready_snapshot(self, image: Image, accel: Accel,
                       memory_mib: int | None = None) -> SnapshotPoint | None:
        """The golden snapshot point for this machine identity if it is made and sound;
        None (never a build) otherwise."""
        point = image.snapshot_point(image.machine_spec(memory_mib).identity(accel, qemu_version()))
        try:
            point.verify()
        except ImageError:
            return None
        return point

    async def ensure_snapshot(self, image: Image, accel: Accel, *, memory_mib: int | None = None,
                              progress: Progress = no_progress,
                              force: bool = False) -> SnapshotPoint:
        """The golden snapshot point for this machine identity; made now if missing/stale."""
        spec = image.machine_spec(memory_mib)
        point = image.snapshot_point(spec.identity(accel, qemu_version()))
        if not force:
            with contextlib.suppress(ImageError):
                point.verify()
                return point
        async with self._locked(image.name):
            if not force:  # someone else may have made it while we waited
                try:
                    point.verify()
                    return point
                except ImageError as exc:
                    if point.directory.exists():
                        log.warning("rebuilding snapshot point: %s", exc)
            return await make_snapshot_point(
                point, spec, accel, base=image.base, name=image.name,
                ready_command=image.recipe.ready_command, runtime=self.paths.runtime,
                progress=progress)


def _retire_points(old: Path, new: Path) -> None:
    """Before a rebuild replaces ``old``: each of its snapshot points moves into ``new`` with
    the base files it was made from (hard links: no copy), so kept contexts on it still
    start exactly where they were. Unused ones are collected later (``collect_points``)."""
    private_dir(new / "snapshots")
    for point in sorted((old / "snapshots").glob("*")):
        if not point.is_dir() or point.name.endswith(".tmp"):
            continue
        base = point / RETIRED_BASE
        if not (base / "root.qcow2").exists():
            private_dir(base)
            for f in _BASE_FILES:
                (base / f).unlink(missing_ok=True)
                try:
                    os.link(old / f, base / f)
                except OSError:  # another file system: a copy
                    shutil.copy2(old / f, base / f)
            fsync_dir(base)
        point.rename(new / "snapshots" / point.name)
    fsync_dir(new / "snapshots")


def is_built(target: Path, name: str) -> bool:
    """Built, and by the recipe as it is now (a changed recipe means a rebuild)."""
    try:
        manifest = json.loads((target / "manifest.json").read_text())
        return bool(manifest["recipe_sha256"] == recipe_digest(name))
    except (OSError, ValueError, KeyError):
        return False


async def _tail(stream: asyncio.StreamReader | None, keep: int = 20) -> list[str]:
    lines: list[str] = []
    if stream is None:
        return lines
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        log.debug("recipe: %s", line)
        if line:
            lines = [*lines[-keep + 1:], line]
    return lines



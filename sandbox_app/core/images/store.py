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
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BlankSlateError, Cancelled, ImageError, NotFoundError
from ..guest import agent as agent_mod
from ..progress import Progress, no_progress
from ..storage import Paths, atomic_write_json, fsync_dir, private_dir, validate_name
from ..vm import (
    Accel,
    Layer,
    MachineSpec,
    QemuMachine,
    create_overlay,
    probe_kvm,
    qemu_version,
    virtual_size,
)

log = logging.getLogger(__name__)

RECIPES = ("tiny", "browser")
_BASE_FILES = ("vmlinuz", "initrd.img", "root.qcow2")


def recipes_dir() -> Path:
    """Where the image recipes live (source checkout, or BLANKSLATE_RECIPES)."""
    env = os.environ.get("BLANKSLATE_RECIPES")
    if env:
        return Path(env)
    for candidate in (
        Path(__file__).resolve().parents[3] / "vm_images",
        Path(sys.prefix) / "share" / "blankslate" / "vm_images",
        Path("/usr/share/blankslate/vm_images"),
    ):
        if candidate.is_dir():
            return candidate
    raise ImageError("image recipes not found (set BLANKSLATE_RECIPES)")


def recipe_digest(name: str) -> str:
    """One hash of everything in a recipe's directory (build.py and the guest files)."""
    root = recipes_dir() / name
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f"{path.relative_to(root)}\0{sha256_file(path)}\0".encode())
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def _rgb(color: str) -> tuple[int, int, int]:
    value = int(color.removeprefix("#"), 16)
    return value >> 16, (value >> 8) & 0xFF, value & 0xFF


@dataclass(frozen=True)
class Recipe:
    """What a recipe's ``recipe.json`` says about booting its image."""

    name: str
    append: str
    memory_mib: int
    ready_command: str
    cpus: int = 1
    display: tuple[int, int] = (1024, 768)
    open_url_command: tuple[str, ...] = ()
    # The colour the browser fills its window with while a new page has not painted yet.
    loading_color: tuple[int, int, int] | None = None
    downloads_dir: str = "/root/Downloads"
    clipboard_set_command: tuple[str, ...] = ()  # text on stdin; empty: no clipboard
    clipboard_get_command: tuple[str, ...] = ()  # text on stdout
    network_command: str = ""  # (re)applies the network after a restore; empty: none

    @classmethod
    def load(cls, path: Path) -> Recipe:
        try:
            d: dict[str, Any] = json.loads(path.read_text())
            disp = d.get("display") or {}
            return cls(
                name=d["name"],
                append=d["append"],
                memory_mib=int(d["memory_mib"]),
                ready_command=d.get("ready_command", "true"),
                cpus=int(d.get("cpus", 1)),
                display=(int(disp.get("width", 1024)), int(disp.get("height", 768))),
                open_url_command=tuple(d.get("open_url_command", ())),
                loading_color=_rgb(d["loading_color"]) if d.get("loading_color") else None,
                downloads_dir=str(d.get("downloads_dir", "/root/Downloads")),
                clipboard_set_command=tuple(map(str, d.get("clipboard_set_command", ()))),
                clipboard_get_command=tuple(map(str, d.get("clipboard_get_command", ()))),
                network_command=str(d.get("network_command", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ImageError(f"image recipe file {path} is unreadable or corrupt") from exc


@dataclass(frozen=True)
class SnapshotPoint:
    """A golden (disk, RAM, device state) triple that sessions restore from."""

    directory: Path
    identity: str

    @property
    def disk(self) -> Path:
        return self.directory / "golden.qcow2"

    @property
    def ram(self) -> Path:
        return self.directory / "ram.img"

    @property
    def state(self) -> Path:
        return self.directory / "state.bin"

    def verify(self) -> None:
        """Cheap check before each restore: files present, device state checksum right."""
        try:
            meta = json.loads((self.directory / "snapshot.json").read_text())
            if meta["identity"] != self.identity:
                raise ImageError("snapshot point belongs to another machine configuration")
            for p in (self.disk, self.ram):
                if p.stat().st_size != meta["sizes"][p.name]:
                    raise ImageError(f"snapshot file {p.name} has the wrong size (corrupt)")
            if sha256_file(self.state) != meta["sha256"]["state.bin"]:
                raise ImageError("snapshot device state is corrupt (checksum mismatch)")
        except (OSError, ValueError, KeyError) as exc:
            raise ImageError(f"snapshot point {self.directory.name} is missing or corrupt") from exc


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
            kernel=self.kernel,
            initrd=self.initrd,
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
        )
        directory = builds[-1][1] if builds else self.directory / "snapshots" / f"{identity[:16]}-1"
        return SnapshotPoint(directory, identity)

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
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        work.rename(target)
        fsync_dir(self.root)
        shutil.rmtree(old, ignore_errors=True)

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
            return await make_snapshot_point(image, point, spec, accel,
                                             runtime=self.paths.runtime, progress=progress)


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


async def make_snapshot_point(image: Image, point: SnapshotPoint, spec: MachineSpec,
                              accel: Accel, *, runtime: Path,
                              progress: Progress = no_progress) -> SnapshotPoint:
    """Boot the base image once, wait until it is ready, save (disk, RAM, devices) together.

    Returns the point made: a rebuild goes to a new directory, never over the old one.
    """
    if point.directory.exists():  # a rebuild: the old point may still carry kept layers
        prefix, n = point.directory.name.rsplit("-", 1)
        point = SnapshotPoint(point.directory.with_name(f"{prefix}-{int(n) + 1}"),
                              point.identity)
    work = point.directory.with_name(point.directory.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    private_dir(work)
    run = private_dir(runtime / f"b-{point.directory.name}")
    golden = work / "golden.qcow2"
    ram = work / "ram.img"
    try:
        await create_overlay(golden, image.base, await virtual_size(image.base), None)
        with open(ram, "wb") as f:
            f.truncate(spec.memory_mib << 20)
        spec = dataclasses.replace(
            spec, disk=(Layer(image.base), Layer(golden)), ram_file=ram, ram_shared=True
        )
        machine = QemuMachine(spec, run, accel)
        progress(f"{image.name}: booting to make the snapshot point", 0.87)
        started = time.monotonic()
        await machine.launch(incoming=False)
        try:
            await machine.execute("cont")
            agent = await _wait_for_agent(machine, timeout=300.0 if accel is Accel.TCG else 60)
            progress(f"{image.name}: waiting until the guest is ready", 0.92)
            await _wait_ready(agent, image.recipe.ready_command, timeout=600.0)
            boot_s = time.monotonic() - started
            await agent.shell("sync", timeout=60)
            progress(f"{image.name}: saving the snapshot point", 0.96)
            with open(work / "state.bin", "wb") as out:
                await machine.save(out.fileno(), template=True)
                os.fsync(out.fileno())
            await agent.close()
        finally:
            await machine.shutdown()
        shutil.rmtree(run, ignore_errors=True)
        with open(ram, "rb+") as f:
            os.fsync(f.fileno())
        # QEMU opens a memory backend's file read-write even for a private (share=off,
        # copy-on-write) mapping, so ram.img keeps its owner's write bit; sessions never
        # write to it (tests compare its checksum after sessions).
        os.chmod(ram, 0o600)
        for p in (golden, work / "state.bin"):
            os.chmod(p, 0o444)
        atomic_write_json(work / "snapshot.json", {
            "identity": point.identity,
            "qemu": qemu_version(),
            "accel": accel.value,
            "memory_mib": spec.memory_mib,
            "saved_at": time.time(),
            "cold_boot_s": round(boot_s, 3),
            "sizes": {p.name: p.stat().st_size for p in (golden, ram)},
            "sha256": {"state.bin": sha256_file(work / "state.bin")},
        })
        work.rename(point.directory)
        fsync_dir(point.directory.parent)
        progress(f"{image.name}: snapshot point ready", 1.0)
        return point
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)
        raise


async def _wait_for_agent(machine: QemuMachine, timeout: float) -> agent_mod.GuestAgent:
    ga = await agent_mod.GuestAgent.from_socket(machine.take_agent_socket())
    try:
        await ga.wait_ready(timeout)
    except BlankSlateError as exc:
        await ga.close()
        raise ImageError(f"the guest did not come up: {exc} ({machine.failure_message()})") \
            from exc
    return ga


async def _wait_ready(ga: agent_mod.GuestAgent, command: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = await ga.shell(command, timeout=60)
        if res.exit_code == 0:
            return
        if time.monotonic() > deadline:
            raise ImageError("the guest never became ready: " + res.stderr.decode()[-200:])
        await asyncio.sleep(0.5)


__all__ = ["Cancelled", "Image", "ImageStore", "Recipe", "SnapshotPoint"]

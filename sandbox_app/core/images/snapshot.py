"""A golden snapshot point: (disk, RAM, device state) saved at one instant, and how one is made."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import BlankSlateError, ImageError
from ..guest import agent as agent_mod
from ..progress import Progress, no_progress
from ..storage import atomic_write_json, fsync_dir, private_dir
from ..vm import Accel, Layer, MachineSpec, QemuMachine, create_overlay, qemu_version, virtual_size
from .recipe import sha256_file

RETIRED_BASE = "base"  # in a retired point's directory: the build it was made from


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

    @property
    def retired(self) -> bool:
        """Made from an earlier build of its image, whose base files it now carries itself
        (kept contexts still sit on it): see ``ImageStore.update``."""
        return (self.directory / RETIRED_BASE / "root.qcow2").exists()

    def base_files(self, image_dir: Path) -> tuple[Path, Path, Path]:
        """(kernel, initrd, root disk) this point was made from."""
        d = self.directory / RETIRED_BASE if self.retired else image_dir
        return d / "vmlinuz", d / "initrd.img", d / "root.qcow2"

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



async def make_snapshot_point(point: SnapshotPoint, spec: MachineSpec, accel: Accel, *,
                              base: Path, name: str, ready_command: str, runtime: Path,
                              progress: Progress = no_progress) -> SnapshotPoint:
    """Boot image ``name`` from its ``base`` disk once, wait until ``ready_command`` says it
    is ready, save (disk, RAM, devices) together.

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
        await create_overlay(golden, base, await virtual_size(base), None)
        with open(ram, "wb") as f:
            f.truncate(spec.memory_mib << 20)
        spec = dataclasses.replace(
            spec, disk=(Layer(base), Layer(golden)), ram_file=ram, ram_shared=True
        )
        progress(f"{name}: booting to make the snapshot point", 0.87)
        started = time.monotonic()
        async with QemuMachine(spec, run, accel) as machine:
            await machine.launch(incoming=False)
            await machine.execute("cont")
            agent = await _wait_for_agent(machine, timeout=300.0 if accel is Accel.TCG else 60)
            progress(f"{name}: waiting until the guest is ready", 0.92)
            failure = await agent.wait_until(ready_command, timeout=600.0)
            if failure is not None:
                raise ImageError(f"the guest never became ready: {failure}")
            boot_s = time.monotonic() - started
            await agent.shell("sync", timeout=60)
            progress(f"{name}: saving the snapshot point", 0.96)
            with open(work / "state.bin", "wb") as out:
                await machine.save(out.fileno(), template=True)
                os.fsync(out.fileno())
            await agent.close()
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
        progress(f"{name}: snapshot point ready", 1.0)
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

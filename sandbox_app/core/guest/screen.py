"""What the guest's screen shows, read through QMP ``screendump`` (no VNC client needed).

QEMU writes the dump into a FIFO in the session's private runtime dir, so no picture of the
guest's screen is ever stored.
PPM frames are compared to tell when a page has finished drawing; PNG is what users get.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import GuestError
from ..vm import QemuMachine


@dataclass(frozen=True)
class Frame:
    """An RGB picture of the guest screen (from a binary PPM)."""

    width: int
    height: int
    rgb: bytes

    @classmethod
    def from_ppm(cls, data: bytes) -> Frame:
        # P6\n<w> <h>\n255\n<rgb> — QEMU writes exactly this header, no comments.
        parts = data.split(maxsplit=4)
        if len(parts) < 5 or parts[0] != b"P6" or parts[3] != b"255":
            raise GuestError("the guest screen dump is not a PPM picture")
        width, height = int(parts[1]), int(parts[2])
        rgb = parts[4]
        if len(rgb) < width * height * 3:
            raise GuestError("the guest screen dump is truncated")
        return cls(width, height, rgb[:width * height * 3])

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        i = (y * self.width + x) * 3
        return self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]

    def mostly(self, color: tuple[int, int, int], share: float = 0.98) -> bool:
        """Is (a sample of) the screen nearly all ``color``? (A pointer may sit on it.)"""
        want = bytes(color)
        samples = range(0, self.width * self.height, 97)
        hits = sum(self.rgb[i * 3:i * 3 + 3] == want for i in samples)
        return hits >= share * len(samples)


async def _dump(machine: QemuMachine, runtime_dir: Path, fmt: str) -> bytes:
    """QEMU's screendump, written into a memfd QEMU gets as ``/dev/fdset/N``: the picture
    never lands on a disk, and QEMU needs no access to any path (it may run as another
    user: ``process.qemu_user``)."""
    del runtime_dir  # kept for the callers; nothing is written there any more
    return await machine.into_memfd("screendump", {"format": fmt})


async def grab(machine: QemuMachine, runtime_dir: Path) -> Frame:
    """The screen as it is now."""
    return Frame.from_ppm(await _dump(machine, runtime_dir, "ppm"))


async def save_png(machine: QemuMachine, runtime_dir: Path, dest: Path) -> None:
    """Write the screen as a PNG to ``dest`` (replaced atomically)."""
    data = await _dump(machine, runtime_dir, "png")
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        await asyncio.to_thread(tmp.write_bytes, data)
        tmp.replace(dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


async def wait_settled(machine: QemuMachine, runtime_dir: Path, *,
                       changed_from: Frame | None = None,
                       loading_color: tuple[int, int, int] | None = None, quiet_s: float = 0.8,
                       change_timeout: float = 20.0, timeout: float = 60.0,
                       interval: float = 0.1) -> Frame:
    """Wait until the screen has changed from ``changed_from`` and then stops changing.

    "Stops changing" means ``quiet_s`` without a different frame: what a page looks like once
    it has loaded and drawn. A screen filled with ``loading_color`` (the browser's empty
    document before the page paints) is not a result yet. A screen that never leaves
    ``changed_from`` or that colour is accepted after ``change_timeout`` (the same page opened
    again, a blank page); one that never settles (an animation) returns its last frame at
    ``timeout``. Never hangs.
    """
    start = time.monotonic()
    last = await grab(machine, runtime_dir)
    stable_since = start
    while (now := time.monotonic()) < start + timeout:
        await asyncio.sleep(interval)
        frame = await grab(machine, runtime_dir)
        now = time.monotonic()
        if frame != last:
            last, stable_since = frame, now
            continue
        unchanged = (changed_from is not None and frame == changed_from) or (
            loading_color is not None and frame.mostly(loading_color))
        if (not unchanged or now - start >= change_timeout) and now - stable_since >= quiet_s:
            return frame
    return last

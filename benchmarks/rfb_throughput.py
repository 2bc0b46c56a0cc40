"""Full-screen update throughput from QEMU's VNC server over a unix socket: Raw vs Zlib.

    python benchmarks/rfb_throughput.py [--seconds S]

Starts QEMU (TCG, std VGA, no guest), switches the Bochs VGA to 1280x800x32 through the
monitor's port-write command, writes a screen into VRAM through the gdbstub — a page-like
image (compresses well, like a web page) and random noise (the worst case) — and pans it by a
few lines every 30 ms so every refresh changes the whole screen. The client runs its normal
incremental update loop; prints updates/s, pixels/s, bytes/s and the client's CPU time per
update (including the panner's monitor calls) for Raw and Zlib, all measured in the same run.
(Asking for non-incremental updates of a static screen instead only measures QEMU's idle
refresh timer, ~3 frames/s.) ``benchmarks/display.py`` reuses this panning source.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qemu.qmp import QMPClient

from sandbox_app.core.guest import Encoding, RfbClient

WIDTH, HEIGHT = 1280, 800
PAN_LINES = 7


async def _hmp(qmp: QMPClient, line: str) -> str:
    return str(await qmp.execute("human-monitor-command", {"command-line": line}))


async def set_bochs_mode(qmp: QMPClient, width: int, height: int) -> None:
    """Program the Bochs DISPI registers (index port 0x1ce, data 0x1cf) like a guest driver."""
    for index, value in ((4, 0), (1, width), (2, height), (3, 32), (4, 0x41)):
        await _hmp(qmp, f"o/h 0x1ce {index}")
        await _hmp(qmp, f"o/h 0x1cf {value}")


async def vram_address(qmp: QMPClient) -> int:
    buses: list[dict[str, Any]] = await qmp.execute("query-pci")  # type: ignore[assignment]
    for bus in buses:
        for dev in bus["devices"]:
            if dev["class_info"]["class"] == 0x300:
                return int(dev["regions"][0]["address"])
    raise RuntimeError("no VGA device")


async def fill_vram(gdb_path: Path, address: int, data: bytes) -> None:
    """Write ``data`` at guest-physical ``address`` with gdbstub ``M`` packets (paging is off)."""
    reader, writer = await asyncio.open_unix_connection(str(gdb_path))

    async def packet(body: str) -> bytes:
        csum = sum(body.encode()) & 0xFF
        writer.write(f"${body}#{csum:02x}".encode())
        await writer.drain()
        reply = b""
        while not reply.endswith(b"#"):
            reply += await reader.readexactly(1)
        await reader.readexactly(2)
        writer.write(b"+")
        return reply

    chunk = 1024
    for off in range(0, len(data), chunk):
        part = data[off:off + chunk]
        reply = await packet(f"M{address + off:x},{len(part):x}:{part.hex()}")
        if b"OK" not in reply:
            raise RuntimeError(f"gdbstub write failed: {reply!r}")
    writer.close()


def page_like(width: int, height: int) -> bytes:
    """White page with dark "words": compresses like a rendered web page (roughly 20:1)."""
    rng = random.Random(1)
    rows = []
    for y in range(height):
        row = bytearray(b"\xff\xff\xff\x00" * width)
        if y % 20 < 12:
            for x0 in range(8, width - 64, 48):
                if rng.random() < 0.7:
                    n = rng.randrange(8, 40)
                    row[x0 * 4:(x0 + n) * 4] = b"\x30\x30\x30\x00" * n
        rows.append(bytes(row))
    return b"".join(rows)


async def pan(qmp: QMPClient, stop: asyncio.Event) -> None:
    """Flip the Bochs Y offset (DISPI register 9) so every refresh redraws the whole screen."""
    offset = 0
    while not stop.is_set():
        offset = PAN_LINES - offset
        await _hmp(qmp, "o/h 0x1ce 9")
        await _hmp(qmp, f"o/h 0x1cf {offset}")
        await asyncio.sleep(0.03)


def count_updates(client: RfbClient) -> list[int]:
    """A one-element counter of the FramebufferUpdates that answered our requests (frames)."""
    updates = [0]
    orig_update = client._read_framebuffer_update

    async def counting_update() -> bool:
        answered = await orig_update()
        updates[0] += answered
        return answered

    client._read_framebuffer_update = counting_update  # type: ignore[method-assign]
    return updates


@dataclass
class VgaSource:
    """A running :func:`vga_qemu`: its monitor and its VNC and gdbstub sockets."""

    qmp: QMPClient
    vnc: Path
    gdb: Path


@contextlib.asynccontextmanager
async def vga_qemu(workdir: Path) -> AsyncIterator[VgaSource]:
    """QEMU (TCG, std VGA, no guest), stopped in Bochs mode WIDTHxHEIGHTx32; killed at exit."""
    d = workdir
    proc = await asyncio.create_subprocess_exec(
        "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-machine", "q35,accel=tcg",
        "-m", "64", "-device", "VGA", "-display", "none", "-vnc", f"unix:{d / 'vnc.sock'}",
        "-qmp", f"unix:{d / 'qmp.sock'},server=on,wait=off",
        "-gdb", f"unix:{d / 'gdb.sock'},server=on,wait=off")
    try:
        for _ in range(100):
            if (d / "qmp.sock").exists() and (d / "vnc.sock").exists():
                break
            await asyncio.sleep(0.05)
        qmp = QMPClient("bench")
        await qmp.connect(str(d / "qmp.sock"))
        await asyncio.sleep(1.0)  # let SeaBIOS set up the PCI BARs
        await qmp.execute("stop")  # SeaBIOS must not set a mode after ours
        await set_bochs_mode(qmp, WIDTH, HEIGHT)
        yield VgaSource(qmp, d / "vnc.sock", d / "gdb.sock")
        with contextlib.suppress(EOFError):  # QEMU may hang up before answering
            await qmp.execute("quit")
            await qmp.disconnect()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def measure(sock: Path, qmp: QMPClient, encodings: tuple[Encoding, ...],
                  seconds: float) -> tuple[float, float, float, float]:
    """Return (updates/s, Mpixel/s, MB/s on the socket, client CPU ms/update)."""
    client = await RfbClient.connect(sock, encodings=encodings)
    received = 0
    orig_read = client._reader.readexactly

    async def counting(n: int) -> bytes:
        nonlocal received
        received += n
        return await orig_read(n)

    client._reader.readexactly = counting  # type: ignore[method-assign]
    pixels = [0]

    def on_update(x: int, y: int, w: int, h: int) -> None:
        pixels[0] += w * h

    client.on_update = on_update
    updates = count_updates(client)
    stop = asyncio.Event()
    panner = asyncio.create_task(pan(qmp, stop), name="pan")
    task = asyncio.create_task(client.run(), name="rfb")
    await asyncio.sleep(0.5)  # warm up
    received, pixels[0], updates[0] = 0, 0, 0
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0  # includes the panner's QMP calls (same for both)
    stop.set()
    await panner
    client.close()
    await task
    n = max(updates[0], 1)
    return updates[0] / elapsed, pixels[0] / elapsed / 1e6, received / elapsed / 1e6, cpu / n * 1000


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="blankslate-rfb-") as tmp:
        async with vga_qemu(Path(tmp)) as vga:
            raw = (Encoding.RAW, Encoding.EXTENDED_DESKTOP_SIZE)
            zlib_enc = (Encoding.ZLIB, Encoding.RAW, Encoding.EXTENDED_DESKTOP_SIZE)
            print(f"QEMU std VGA {WIDTH}x{HEIGHT}x32, unix socket, whole screen changing, "
                  f"{args.seconds:.0f} s each")
            lines = HEIGHT + PAN_LINES
            for content, data in (("page-like", page_like(WIDTH, lines)),
                                  ("random noise", os.urandom(WIDTH * lines * 4))):
                await fill_vram(vga.gdb, await vram_address(vga.qmp), data)
                results = {}
                for label, encs in (("Raw", raw), ("Zlib", zlib_enc)):
                    results[label] = await measure(vga.vnc, vga.qmp, encs, args.seconds)
                    ups, mpix, mbs, cpu = results[label]
                    print(f"  {content:12s} {label:4s} {ups:5.1f} updates/s {mpix:6.1f} Mpixel/s "
                          f"{mbs:6.1f} MB/s on the socket, client CPU {cpu:5.1f} ms/update")
                print(f"  {content:12s} Zlib/Raw pixel throughput ratio "
                      f"{results['Zlib'][1] / results['Raw'][1]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

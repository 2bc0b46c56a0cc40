"""The RFB client against real QEMU (std VGA, SeaBIOS, no guest) and against scripted fakes."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from sandbox_app.core.guest import (
    MAX_DIMENSION,
    RfbClient,
    RfbConnectionClosed,
    RfbError,
    qnum_from_evdev,
    qnum_from_x11_keycode,
)

pytestmark = pytest.mark.timeout(60)


# -- real QEMU ------------------------------------------------------------------------------


class Qemu:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.vnc = tmp / "vnc.sock"
        self.qmp = tmp / "qmp.sock"
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-machine", "q35,accel=tcg",
             "-m", "64", "-device", "VGA", "-display", "none", "-vnc", f"unix:{self.vnc}",
             "-qmp", f"unix:{self.qmp},server=on,wait=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (self.vnc.exists() and self.qmp.exists()):
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)

    async def monitor(self) -> QMPClient:
        qmp = QMPClient("test")
        await qmp.connect(str(self.qmp))
        return qmp

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[Qemu]:
    q = Qemu(tmp_path)
    yield q
    q.stop()


async def _hmp(qmp: QMPClient, line: str) -> None:
    await qmp.execute("human-monitor-command", {"command-line": line})


async def _set_bochs_mode(qmp: QMPClient, width: int, height: int) -> None:
    """What a guest's bochs driver does: program the DISPI registers through ports 0x1ce/0x1cf."""
    for index, value in ((4, 0), (1, width), (2, height), (3, 32), (4, 0x41)):
        await _hmp(qmp, f"o/h 0x1ce {index}")
        await _hmp(qmp, f"o/h 0x1cf {value}")


async def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _non_black(fb: bytearray) -> int:
    return len(fb) // 4 - fb.count(b"\x00\x00\x00\xff")


def _read_ppm(path: Path) -> tuple[int, int, bytes]:
    data = path.read_bytes()
    magic, w, h, maxval, pixels = data.split(maxsplit=4)
    assert magic == b"P6" and maxval == b"255"
    return int(w), int(h), pixels


def _as_rgb(fb: bytearray) -> bytes:
    rgb = bytearray(len(fb) // 4 * 3)
    rgb[0::3], rgb[1::3], rgb[2::3] = fb[2::4], fb[1::4], fb[0::4]
    return bytes(rgb)


def _started(client: RfbClient) -> asyncio.Task[None]:
    return asyncio.create_task(client.run(), name="rfb-run")


def test_handshake_gives_qemu_screen_size_and_name(qemu: Qemu) -> None:
    async def go() -> None:
        client = await RfbClient.connect(qemu.vnc)
        assert client.name == "QEMU"
        assert (client.width, client.height) in {(640, 480), (720, 400)}
        assert len(client.framebuffer) == client.width * client.height * 4
        client.close()
    asyncio.run(go())


def test_qemu_confirms_extended_key_event_and_extended_desktop_size(qemu: Qemu) -> None:
    async def go() -> None:
        client = await RfbClient.connect(qemu.vnc)
        run = _started(client)
        await _until(lambda: client.extended_key_event and client.extended_desktop_size)
        await _until(lambda: client.led_state is not None)
        client.close()
        await run
    asyncio.run(go())


def test_framebuffer_matches_qemu_screendump(qemu: Qemu) -> None:
    async def go() -> None:
        client = await RfbClient.connect(qemu.vnc)
        run = _started(client)
        await _until(lambda: _non_black(client.framebuffer) > 1000)  # SeaBIOS text
        qmp = await qemu.monitor()
        await qmp.execute("stop")  # freezes the virtual clock, so the text cursor stops blinking
        dump = qemu.dir / "screen.ppm"
        for _ in range(50):
            await asyncio.sleep(0.2)
            await qmp.execute("screendump", {"filename": str(dump)})
            w, h, pixels = _read_ppm(dump)
            if (w, h) == (client.width, client.height) and _as_rgb(client.framebuffer) == pixels:
                break
        else:
            pytest.fail("framebuffer never matched the screendump")
        await qmp.disconnect()
        client.close()
        await run
    asyncio.run(go())


def test_guest_mode_switch_resizes_the_framebuffer(qemu: Qemu) -> None:
    async def go() -> None:
        client = await RfbClient.connect(qemu.vnc)
        resizes: list[tuple[int, int]] = []
        client.on_resize = lambda w, h: resizes.append((w, h))
        run = _started(client)
        # Wait for SeaBIOS to enable the VGA's ports and print its text, then freeze it so it
        # cannot set its own mode after ours.
        await _until(lambda: client.height == 400 and _non_black(client.framebuffer) > 1000)
        qmp = await qemu.monitor()
        await qmp.execute("stop")
        await _set_bochs_mode(qmp, 1280, 800)
        await _until(lambda: (client.width, client.height) == (1280, 800))
        assert resizes[-1] == (1280, 800)
        assert len(client.framebuffer) == 1280 * 800 * 4
        await qmp.disconnect()
        client.close()
        await run
    asyncio.run(go())


def test_input_events_keep_the_connection_alive(qemu: Qemu) -> None:
    async def go() -> None:
        client = await RfbClient.connect(qemu.vnc)
        updates: list[tuple[int, int, int, int]] = []
        client.on_update = lambda x, y, w, h: updates.append((x, y, w, h))
        run = _started(client)
        await _until(lambda: client.extended_key_event and _non_black(client.framebuffer) > 1000)
        a = qnum_from_evdev(30)
        client.key_event(0x61, True, a)
        client.key_event(0x61, False, a)
        client.key_event(0xFF0D, True)  # plain KeyEvent (no scancode)
        client.key_event(0xFF0D, False)
        client.pointer_event(10, 10, 1)
        client.pointer_event(10, 10, 0)
        client.pointer_event(99999, -5, 8)  # clamped
        client.client_cut_text("hello ✓")
        # std VGA cannot change size on request: QEMU answers "invalid layout", size unchanged.
        qmp = await qemu.monitor()
        await qmp.execute("stop")  # so SeaBIOS cannot switch modes meanwhile
        await qmp.disconnect()
        await asyncio.sleep(0.3)
        size = (client.width, client.height)
        assert client.set_desktop_size(800, 600)
        await asyncio.sleep(0.3)
        assert (client.width, client.height) == size
        updates.clear()
        client.request_update(incremental=False)
        await _until(lambda: bool(updates))
        assert not run.done()
        client.close()
        await run
    asyncio.run(go())


def test_qemu_exit_ends_run_with_connection_closed(qemu: Qemu) -> None:
    async def go() -> None:
        client = await RfbClient.connect(qemu.vnc)
        run = _started(client)
        await asyncio.sleep(0.3)
        qemu.stop()
        with pytest.raises(RfbConnectionClosed):
            await asyncio.wait_for(run, 10)
    asyncio.run(go())


# -- scripted fake servers -----------------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           w: int, h: int) -> None:
    writer.write(b"RFB 003.008\n")
    assert await reader.readexactly(12) == b"RFB 003.008\n"
    writer.write(b"\x01\x01")
    assert await reader.readexactly(1) == b"\x01"
    writer.write(b"\x00\x00\x00\x00")
    assert await reader.readexactly(1) == b"\x01"  # shared
    pf = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
    writer.write(struct.pack(">HH", w, h) + pf + struct.pack(">I", 4) + b"fake")
    await reader.readexactly(20)  # SetPixelFormat
    _, n = struct.unpack(">BxH", await reader.readexactly(4))
    await reader.readexactly(4 * n)


def _update(*rects: bytes) -> bytes:
    return struct.pack(">BxH", 0, len(rects)) + b"".join(rects)


def _rect(x: int, y: int, w: int, h: int, enc: int, body: bytes = b"") -> bytes:
    return struct.pack(">HHHHi", x, y, w, h, enc) + body


async def _with_fake(tmp_path: Path, script: Script,
                     test: Callable[[Path], Awaitable[None]]) -> None:
    sock = tmp_path / "fake.sock"
    done: list[BaseException | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
            await writer.drain()
            done.append(None)
        except BaseException as e:
            done.append(e)
        finally:
            writer.close()

    server = await asyncio.start_unix_server(handle, str(sock))
    async with server:
        await test(sock)
        await _until(lambda: bool(done), 5)
    if done[0] is not None:
        raise done[0]


def test_desktop_size_and_raw_and_copyrect_are_applied(tmp_path: Path) -> None:
    pixel = b"\x01\x02\x03\x00"

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_handshake(reader, writer, 4, 2)
        await reader.readexactly(10)  # first update request
        writer.write(_update(_rect(0, 0, 8, 4, -223),
                             _rect(1, 1, 2, 1, 0, pixel * 2),
                             _rect(4, 2, 2, 1, 1, struct.pack(">HH", 1, 1))))
        writer.write(b"\x02")  # bell
        writer.write(struct.pack(">BxxxI", 3, 5) + b"hi\xe9!!")

    async def test(sock: Path) -> None:
        client = await RfbClient.connect(sock)
        events: list[object] = []
        client.on_resize = lambda w, h: events.append(("resize", w, h))
        client.on_update = lambda x, y, w, h: events.append(("update", x, y, w, h))
        client.on_bell = lambda: events.append("bell")
        client.on_cut_text = lambda t: events.append(("cut", t))
        with pytest.raises(RfbConnectionClosed):
            await client.run()
        # One update for the message: the bounds of its raw (1,1 2x1) and copy (4,2 2x1)
        # rectangles, so the widget repaints once per update, not once per rectangle.
        assert events == [("resize", 8, 4), ("update", 1, 1, 5, 2), "bell", ("cut", "hié!!")]
        fb = client.framebuffer
        assert len(fb) == 8 * 4 * 4
        px = b"\x01\x02\x03\xff"
        assert fb[(1 * 8 + 1) * 4:][:8] == px * 2
        assert fb[(2 * 8 + 4) * 4:][:8] == px * 2
        assert fb.count(px) == 4

    asyncio.run(_with_fake(tmp_path, script, test))


def test_failed_extended_desktop_size_keeps_the_size(tmp_path: Path) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_handshake(reader, writer, 4, 2)
        screen = struct.pack(">B3xIHHHHI", 1, 0, 0, 0, 4, 2, 0)
        writer.write(_update(_rect(1, 3, 4, 2, -308, screen)))  # reason 1, status 3
        writer.write(_update(_rect(0, 0, 6, 3, -308, screen)))  # server-side change

    async def test(sock: Path) -> None:
        client = await RfbClient.connect(sock)
        sizes: list[tuple[int, int]] = []
        client.on_resize = lambda w, h: sizes.append((w, h))
        with pytest.raises(RfbConnectionClosed):
            await client.run()
        assert sizes == [(6, 3)]
        assert client.extended_desktop_size

    asyncio.run(_with_fake(tmp_path, script, test))


def test_extended_key_event_wire_format(tmp_path: Path) -> None:
    got: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_handshake(reader, writer, 4, 2)
        await reader.readexactly(10)  # update request
        writer.write(_update(_rect(0, 0, 4, 2, -258)))
        await writer.drain()
        got.append(await reader.readexactly(12))  # extended key event
        got.append(await reader.readexactly(8))  # plain key event (no scancode)

    async def test(sock: Path) -> None:
        client = await RfbClient.connect(sock)
        run = _started(client)
        await _until(lambda: client.extended_key_event, 5)
        client.key_event(0x61, True, 0x1E)
        client.key_event(0xFF0D, False)
        with pytest.raises(RfbConnectionClosed):
            await run

    asyncio.run(_with_fake(tmp_path, script, test))
    assert got == [struct.pack(">BBHII", 255, 0, 1, 0x61, 0x1E),
                   struct.pack(">BBxxI", 4, 0, 0xFF0D)]


@pytest.mark.parametrize("w,h", [(MAX_DIMENSION + 1, 10), (10, 0), (65535, 65535)])
def test_absurd_server_size_is_refused(tmp_path: Path, w: int, h: int) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"RFB 003.008\n")
        await reader.readexactly(12)
        writer.write(b"\x01\x01")
        await reader.readexactly(1)
        writer.write(b"\x00\x00\x00\x00")
        await reader.readexactly(1)
        writer.write(struct.pack(">HH", w, h) + bytes(16) + struct.pack(">I", 4) + b"fake")

    async def test(sock: Path) -> None:
        with pytest.raises(RfbError, match="out of range"):
            await RfbClient.connect(sock)

    asyncio.run(_with_fake(tmp_path, script, test))


@pytest.mark.parametrize("message,error", [
    (_update(_rect(3, 0, 2, 1, 0, bytes(8))), "outside"),        # rect past the right edge
    (_update(_rect(0, 0, 60000, 60000, 0)), "outside"),          # huge rect, no data
    (_update(_rect(0, 0, 1, 1, 1, struct.pack(">HH", 9, 9))), "outside"),  # CopyRect source
    (_update(_rect(0, 0, 9000, 9000, -223)), "out of range"),    # huge DesktopSize
    (_update(_rect(0, 0, 1, 1, 16, bytes(100))), "unrequested encoding"),
    (b"\x99garbage", "unknown message type"),
])
def test_bad_server_messages_raise_rfb_error(tmp_path: Path, message: bytes, error: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_handshake(reader, writer, 4, 2)
        writer.write(message)

    async def test(sock: Path) -> None:
        client = await RfbClient.connect(sock)
        with pytest.raises(RfbError, match=error):
            await client.run()
        assert len(client.framebuffer) == 4 * 2 * 4

    asyncio.run(_with_fake(tmp_path, script, test))


def test_close_ends_run_without_error(tmp_path: Path) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_handshake(reader, writer, 4, 2)
        await reader.read()  # until the client goes

    async def test(sock: Path) -> None:
        client = await RfbClient.connect(sock)
        run = _started(client)
        await asyncio.sleep(0.1)
        client.close()
        await asyncio.wait_for(run, 5)
        with pytest.raises(RfbConnectionClosed):
            client.pointer_event(1, 1, 0)

    asyncio.run(_with_fake(tmp_path, script, test))


def test_connect_to_missing_socket_is_an_rfb_error(tmp_path: Path) -> None:
    with pytest.raises(RfbError, match="cannot connect"):
        asyncio.run(RfbClient.connect(tmp_path / "nothing.sock"))


# -- keymap ---------------------------------------------------------------------------------


def test_keymap_maps_evdev_and_x11_keycodes_to_qnum() -> None:
    assert qnum_from_evdev(30) == 0x1E  # KEY_A
    assert qnum_from_evdev(1) == 0x01  # KEY_ESC
    assert qnum_from_evdev(103) == 0xC8  # KEY_UP = e0 48
    assert qnum_from_evdev(97) == 0x9D  # KEY_RIGHTCTRL = e0 1d
    assert qnum_from_x11_keycode(38) == 0x1E  # X keycode of A on xkb/evdev
    assert qnum_from_x11_keycode(0) is None  # offscreen platform
    assert qnum_from_evdev(999) is None


def _zlib_rect(x: int, y: int, w: int, h: int, pixels: bytes) -> bytes:
    packer = zlib.compressobj()
    data = packer.compress(pixels) + packer.flush(zlib.Z_SYNC_FLUSH)
    return _rect(x, y, w, h, 6, struct.pack(">I", len(data)) + data)


@pytest.mark.parametrize("w,h", [(0, 0), (1, 1)])
def test_a_zlib_bomb_is_refused_without_inflating_it(tmp_path: Path, w: int, h: int) -> None:
    """64 MiB of zeros in 64 KiB of zlib, in a rectangle that holds no pixels (w=h=0 once
    meant "decompress without limit") or 4 bytes: refused, and never decompressed."""
    bomb = _update(_zlib_rect(0, 0, w, h, bytes(64 << 20)))

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_handshake(reader, writer, 4, 2)
        writer.write(bomb)

    async def test(sock: Path) -> None:
        client = await RfbClient.connect(sock)
        tracemalloc.start()
        try:
            with pytest.raises(RfbError, match=r"oversize zlib|more zlib data"):
                await client.run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20

    asyncio.run(_with_fake(tmp_path, script, test))


def test_zlib_data_beyond_its_rectangle_is_refused(tmp_path: Path) -> None:
    """Within the length bound, but decompressing to more than the rectangle: refused
    (keeping the rest would desynchronise the zlib stream)."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_handshake(reader, writer, 4, 2)
        writer.write(_update(_zlib_rect(0, 0, 2, 1, bytes(range(256)) * 4)))

    async def test(sock: Path) -> None:
        client = await RfbClient.connect(sock)
        with pytest.raises(RfbError, match="more zlib data than its rectangle holds"):
            await client.run()

    asyncio.run(_with_fake(tmp_path, script, test))


def test_zlib_rectangles_are_applied(tmp_path: Path) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_handshake(reader, writer, 4, 2)
        await reader.readexactly(10)  # first update request
        packer = zlib.compressobj()
        rects = []
        for x, px in ((0, b"\x01\x02\x03\x00"), (2, b"\x04\x05\x06\x00")):
            data = packer.compress(px * 2) + packer.flush(zlib.Z_SYNC_FLUSH)
            rects.append(_rect(x, 1, 2, 1, 6, struct.pack(">I", len(data)) + data))
        writer.write(_update(*rects, _rect(0, 0, 0, 0, 6, struct.pack(">I", 0))))

    async def test(sock: Path) -> None:
        client = await RfbClient.connect(sock)
        with pytest.raises(RfbConnectionClosed):
            await client.run()
        assert client.framebuffer[4 * 4:] == b"\x01\x02\x03\xff" * 2 + b"\x04\x05\x06\xff" * 2

    asyncio.run(_with_fake(tmp_path, script, test))

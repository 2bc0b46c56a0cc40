"""A small asyncio RFB 3.8 (VNC) client for QEMU's VNC server on a unix socket.

Why our own client and not ``asyncvnc`` or ``vncdotool``: we need QEMU's extended key event
(raw XT scancodes, so the guest sees the physical key whatever the host layout), the
DesktopSize/ExtendedDesktopSize pseudo-encodings (the guest changes resolution), QEMU's
pointer-type-change notice, and a framebuffer laid out exactly as ``QImage.Format_RGB32``.
``asyncvnc`` has none of the first three and depends on numpy; ``vncdotool`` is Twisted. The
protocol subset QEMU needs over a local socket is small (one security type, Raw/CopyRect and a
few pseudo-encodings), so owning ~400 lines beats patching a library.

Encodings: Raw is the default. Over a unix socket the bytes are free and zlib costs CPU on both
ends, so a compressed encoding only slows us down (``benchmarks/rfb_throughput.py`` measures
Raw against Zlib, which this client can also decode).

The framebuffer is ``width * height * 4`` bytes, B, G, R, X per pixel (little-endian 0x00RRGGBB,
i.e. ``QImage.Format_RGB32``); the X byte is forced to 0xff as Qt expects for that format.

Input methods (:meth:`RfbClient.key_event` …) only queue bytes on the transport: they are plain
calls, safe to use while :meth:`RfbClient.run` is reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import struct
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import QemuError

MAX_DIMENSION = 8192
"""Largest width or height we accept from the server (so it cannot make us allocate GBs)."""

MAX_CUT_TEXT = 1 << 20
"""Server clipboard text longer than this is read and dropped, not delivered."""

_MAX_NAME = 4096
_MAX_ZLIB_CHUNK = 64 << 20


class RfbError(QemuError):
    """QEMU's display connection failed or the server broke the protocol."""


class RfbConnectionClosed(RfbError):
    """The display socket closed (QEMU exited or the session ended)."""


class Encoding(enum.IntEnum):
    """RFB encodings and pseudo-encodings this client understands."""

    RAW = 0
    COPY_RECT = 1
    ZLIB = 6
    DESKTOP_SIZE = -223
    POINTER_TYPE_CHANGE = -257  # QEMU: x == 1 means absolute pointer (virtio-tablet)
    QEMU_EXTENDED_KEY_EVENT = -258
    QEMU_LED_STATE = -261
    EXTENDED_DESKTOP_SIZE = -308


DEFAULT_ENCODINGS: tuple[Encoding, ...] = (
    Encoding.RAW,
    Encoding.COPY_RECT,
    Encoding.EXTENDED_DESKTOP_SIZE,
    Encoding.DESKTOP_SIZE,
    Encoding.QEMU_EXTENDED_KEY_EVENT,
    Encoding.POINTER_TYPE_CHANGE,
    Encoding.QEMU_LED_STATE,
)

# Pointer button bits for pointer_event().
BUTTON_LEFT = 1
BUTTON_MIDDLE = 2
BUTTON_RIGHT = 4
WHEEL_UP = 8
WHEEL_DOWN = 16

# 32 bpp, depth 24, little-endian, true colour, 8 bits each, R<<16 | G<<8 | B: bytes B,G,R,X.
_PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)

_MSG_FRAMEBUFFER_UPDATE = 0
_MSG_SET_COLOUR_MAP = 1
_MSG_BELL = 2
_MSG_SERVER_CUT_TEXT = 3


def _noop_update(x: int, y: int, w: int, h: int) -> None:
    pass


def _noop_resize(w: int, h: int) -> None:
    pass


def _noop() -> None:
    pass


def _noop_text(text: str) -> None:
    pass


class RfbClient:
    """One connection to QEMU's VNC server. Create with :meth:`connect`, then ``await run()``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.width = 0
        self.height = 0
        self.framebuffer = bytearray()
        self._dirty: tuple[int, int, int, int] | None = None  # this update's, x0 y0 x1 y1
        self.name = ""
        self.absolute_pointer = False
        """True once QEMU said the guest pointer is absolute (e.g. virtio-tablet)."""
        self.extended_key_event = False
        """True once QEMU confirmed the extended key event (scancodes are sent)."""
        self.extended_desktop_size = False
        """True once QEMU confirmed ExtendedDesktopSize (set_desktop_size() works)."""
        self.led_state: int | None = None
        """QEMU's keyboard LEDs: bit 0 scroll lock, 1 num lock, 2 caps lock."""
        self.on_update: Callable[[int, int, int, int], None] = _noop_update
        self.on_resize: Callable[[int, int], None] = _noop_resize
        self.on_bell: Callable[[], None] = _noop
        self.on_cut_text: Callable[[str], None] = _noop_text
        self._zlib = zlib.decompressobj()
        self._closing = False

    # -- connection -------------------------------------------------------------------------

    @classmethod
    async def connect(cls, path: Path, *, encodings: Iterable[Encoding] = DEFAULT_ENCODINGS,
                      timeout: float = 10.0) -> RfbClient:
        """Connect to ``path``, do the RFB 3.8 handshake (security None) and set our format."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(path), limit=1 << 20), timeout)
        except (OSError, TimeoutError) as e:
            raise RfbError(f"cannot connect to the VM display at {path}: {e}") from e
        client = cls(reader, writer)
        try:
            await asyncio.wait_for(client._handshake(tuple(encodings)), timeout)
        except BaseException as e:
            client.close()
            if isinstance(e, TimeoutError):
                raise RfbError("the VM display did not answer the handshake") from e
            raise
        return client

    async def _handshake(self, encodings: tuple[Encoding, ...]) -> None:
        version = await self._read(12)
        if not version.startswith(b"RFB 003.") or version[11:12] != b"\n":
            raise RfbError(f"not an RFB server: {version!r}")
        if int(version[8:11]) < 8:
            raise RfbError(f"RFB server too old: {version.decode('ascii', 'replace').strip()}")
        self._writer.write(b"RFB 003.008\n")
        (ntypes,) = await self._read_struct(">B")
        if ntypes == 0:
            (length,) = await self._read_struct(">I")
            reason = await self._read(min(length, 4096))
            raise RfbError(f"VM display refused us: {reason.decode('utf-8', 'replace')}")
        types = await self._read(ntypes)
        if 1 not in types:
            raise RfbError(f"VM display wants authentication (types {list(types)})")
        self._writer.write(b"\x01")
        (result,) = await self._read_struct(">I")
        if result != 0:
            raise RfbError("VM display rejected security type None")
        self._writer.write(b"\x01")  # ClientInit: shared
        width, height = await self._read_struct(">HH")
        await self._read(16)  # server pixel format: we replace it below
        (name_len,) = await self._read_struct(">I")
        if name_len > _MAX_NAME:
            raise RfbError("VM display sent an absurd desktop name")
        self.name = (await self._read(name_len)).decode("utf-8", "replace")
        self._resize(width, height, notify=False)
        self._writer.write(b"\x00\x00\x00\x00" + _PIXEL_FORMAT)
        self._writer.write(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings))
        await self._writer.drain()

    def close(self) -> None:
        """Close the connection; a running :meth:`run` returns normally."""
        self._closing = True
        self._writer.close()

    async def wait_closed(self) -> None:
        """Wait until the transport is closed (after :meth:`close`)."""
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()

    # -- main loop --------------------------------------------------------------------------

    async def run(self, max_fps: float | None = None) -> None:
        """Receive updates until :meth:`close`; raise :class:`RfbError` if the server goes away.

        Keeps exactly one incremental update request outstanding; the first request is a full one.
        ``max_fps`` limits how often a new request is sent.
        """
        min_interval = 1.0 / max_fps if max_fps else 0.0
        try:
            self.request_update(incremental=False)
            last_request = time.monotonic()
            while True:
                msg_type = (await self._read(1))[0]
                if msg_type != _MSG_FRAMEBUFFER_UPDATE:
                    await self.read_other_message(msg_type)
                elif await self._read_framebuffer_update():
                    delay = last_request + min_interval - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    self.request_update(incremental=True)
                    last_request = time.monotonic()
        except RfbConnectionClosed:
            if self._closing:
                return
            raise

    def request_update(self, incremental: bool = True) -> None:
        """Send a FramebufferUpdateRequest for the whole screen."""
        self._send(struct.pack(">BBHHHH", 3, int(incremental), 0, 0, self.width, self.height))

    async def read_message(self) -> int:
        """Read and apply one server message; return its type. For benchmarks and tests."""
        msg_type = (await self._read(1))[0]
        if msg_type == _MSG_FRAMEBUFFER_UPDATE:
            await self._read_framebuffer_update()
        else:
            await self.read_other_message(msg_type)
        return msg_type

    async def read_other_message(self, msg_type: int) -> None:
        if msg_type == _MSG_BELL:
            self.on_bell()
        elif msg_type == _MSG_SERVER_CUT_TEXT:
            await self._read(3)
            (length,) = await self._read_struct(">I")
            if length > MAX_CUT_TEXT:
                await self._skip(length)
            else:
                self.on_cut_text((await self._read(length)).decode("latin-1"))
        elif msg_type == _MSG_SET_COLOUR_MAP:
            # Meaningless in true colour, but skip it correctly so we stay in sync.
            _, _, count = await self._read_struct(">xHH")
            await self._skip(count * 6)
        else:
            raise RfbError(f"VM display sent an unknown message type {msg_type}")

    async def _read_framebuffer_update(self) -> bool:
        """Apply one update; True if it answered a request (pixels, a new size, or empty).

        QEMU also sends unsolicited updates holding only pseudo-rectangles (LEDs, pointer type,
        key-event confirmation); answering those with a new request would stack requests up.
        """
        (count,) = await self._read_struct(">xH")
        answered = count == 0
        self._dirty = None
        for _ in range(count):
            x, y, w, h, enc = await self._read_struct(">HHHHi")
            size = (self.width, self.height)
            await self._read_rect(x, y, w, h, enc)
            answered = answered or enc >= 0 or size != (self.width, self.height)
        if self._dirty is not None:  # one repaint for the whole update, not one per rectangle
            x0, y0, x1, y1 = self._dirty
            self._dirty = None
            self.on_update(x0, y0, x1 - x0, y1 - y0)
        return answered

    def _changed(self, x: int, y: int, w: int, h: int) -> None:
        """Pixels changed: grow the update's dirty bounds (reported once, at its end)."""
        if self._dirty is None:
            self._dirty = (x, y, x + w, y + h)
        else:
            x0, y0, x1, y1 = self._dirty
            self._dirty = (min(x0, x), min(y0, y), max(x1, x + w), max(y1, y + h))

    async def _read_rect(self, x: int, y: int, w: int, h: int, enc: int) -> None:
        if enc == Encoding.RAW:
            self._check_rect(x, y, w, h)
            self._put_pixels(x, y, w, h, await self._read(w * h * 4))
        elif enc == Encoding.COPY_RECT:
            src_x, src_y = await self._read_struct(">HH")
            self._check_rect(x, y, w, h)
            self._check_rect(src_x, src_y, w, h)
            self._copy_rect((src_x, src_y), x, y, w, h)
        elif enc == Encoding.ZLIB:
            (length,) = await self._read_struct(">I")
            self._check_rect(x, y, w, h)
            want = w * h * 4
            # Deflate never grows data by more than a few bytes per 16 KiB block.
            if length > min(_MAX_ZLIB_CHUNK, want + (want >> 8) + 1024):
                raise RfbError("VM display sent an oversize zlib rectangle")
            try:
                # max_length 0 would mean "unlimited": an empty rectangle decompresses at
                # most one byte, which is already one too many.
                pixels = self._zlib.decompress(await self._read(length), max(want, 1))
            except zlib.error as e:
                raise RfbError(f"VM display sent corrupt zlib data: {e}") from e
            if len(pixels) > want or self._zlib.unconsumed_tail:
                raise RfbError("VM display sent more zlib data than its rectangle holds")
            if len(pixels) != want:
                raise RfbError("VM display sent a short zlib rectangle")
            self._put_pixels(x, y, w, h, pixels)
        elif enc == Encoding.DESKTOP_SIZE:
            self._resize(w, h)
        elif enc == Encoding.EXTENDED_DESKTOP_SIZE:
            (screens,) = await self._read_struct(">B3x")
            await self._skip(screens * 16)
            self.extended_desktop_size = True
            # y is the status; non-zero answers a failed SetDesktopSize and the size is unchanged.
            if y == 0:
                self._resize(w, h)
        elif enc == Encoding.QEMU_EXTENDED_KEY_EVENT:
            self.extended_key_event = True
        elif enc == Encoding.POINTER_TYPE_CHANGE:
            self.absolute_pointer = x != 0
        elif enc == Encoding.QEMU_LED_STATE:
            self.led_state = (await self._read(1))[0]
        else:
            # We never asked for it, so we cannot know its length: stopping beats desync.
            raise RfbError(f"VM display sent an unrequested encoding {enc}")

    # -- framebuffer ------------------------------------------------------------------------

    def _resize(self, width: int, height: int, *, notify: bool = True) -> None:
        if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
            raise RfbError(f"VM display size {width}x{height} is out of range")
        if (width, height) == (self.width, self.height) and self.framebuffer:
            return
        self.width, self.height = width, height
        self.framebuffer = bytearray(b"\x00\x00\x00\xff" * (width * height))
        if notify:
            self.on_resize(width, height)

    def _check_rect(self, x: int, y: int, w: int, h: int) -> None:
        if x + w > self.width or y + h > self.height:
            raise RfbError(
                f"VM display sent a rectangle {w}x{h}+{x}+{y} outside {self.width}x{self.height}")

    def _put_pixels(self, x: int, y: int, w: int, h: int, pixels: bytes) -> None:
        if not w or not h:
            return
        data = bytearray(pixels)
        data[3::4] = b"\xff" * (w * h)
        stride = self.width * 4
        row = w * 4
        fb = self.framebuffer
        if x == 0 and w == self.width:
            start = y * stride
            fb[start:start + len(data)] = data
        else:
            src = memoryview(data)
            off = (y * self.width + x) * 4
            for i in range(h):
                fb[off:off + row] = src[i * row:(i + 1) * row]
                off += stride
        self._changed(x, y, w, h)

    def _copy_rect(self, src: tuple[int, int], x: int, y: int, w: int, h: int) -> None:
        sx, sy = src
        if not w or not h:
            return
        stride = self.width * 4
        row = w * 4
        fb = self.framebuffer
        rows = [bytes(fb[(sy + i) * stride + sx * 4:][:row]) for i in range(h)]
        for i, data in enumerate(rows):
            off = (y + i) * stride + x * 4
            fb[off:off + row] = data
        self._changed(x, y, w, h)

    # -- input ------------------------------------------------------------------------------

    def key_event(self, keysym: int, down: bool, scancode: int | None = None) -> None:
        """Press or release a key. With QEMU's extended key event, ``scancode`` (qnum) wins."""
        if scancode and self.extended_key_event:
            self._send(struct.pack(">BBHII", 255, 0, int(down), keysym, scancode))
        else:
            self._send(struct.pack(">BBxxI", 4, int(down), keysym))

    def pointer_event(self, x: int, y: int, buttons: int) -> None:
        """Move the pointer to (x, y) with ``buttons`` held (BUTTON_* | WHEEL_* bits)."""
        x = min(max(x, 0), max(self.width - 1, 0))
        y = min(max(y, 0), max(self.height - 1, 0))
        self._send(struct.pack(">BBHH", 5, buttons & 0xFF, x, y))

    def client_cut_text(self, text: str) -> None:
        """Give the guest clipboard ``text`` (RFB carries Latin-1; other characters become ?)."""
        data = text.encode("latin-1", "replace")
        self._send(struct.pack(">BxxxI", 6, len(data)) + data)

    def set_desktop_size(self, width: int, height: int) -> bool:
        """Ask the guest for a new resolution; False if the server cannot (the GUI scales)."""
        if not self.extended_desktop_size:
            return False
        if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
            raise ValueError(f"desktop size {width}x{height} out of range")
        screen = struct.pack(">IHHHHI", 0, 0, 0, width, height, 0)
        self._send(struct.pack(">BxHHBx", 251, width, height, 1) + screen)
        return True

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise RfbConnectionClosed("the VM display connection is closed")
        self._writer.write(data)

    async def _read(self, n: int) -> bytes:
        try:
            return await self._reader.readexactly(n)
        except asyncio.IncompleteReadError as e:
            raise RfbConnectionClosed("the VM display connection closed") from e
        except (ConnectionError, OSError) as e:
            raise RfbConnectionClosed(f"the VM display connection failed: {e}") from e

    async def _read_struct(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, await self._read(struct.calcsize(fmt)))

    async def _skip(self, n: int) -> None:
        while n > 0:
            chunk = min(n, 1 << 16)
            await self._read(chunk)
            n -= chunk

"""A guest's RAM as QEMU holds it: the pages a session changed, read and written from the host.

A session's RAM is a private (copy-on-write) mapping of its snapshot point's ``ram.img``
(``memory-backend-file,share=off``), so the pages the guest wrote are exactly the mapping's
anonymous pages: ``/proc/PID/pagemap`` tells them apart from the file's pages without reading
any. A keep reads those pages through ``/proc/PID/mem`` (guest stopped) and stores the ones
whose *content* differs from ``ram.img``; a restore writes them back into a new QEMU's mapping
before its device state is loaded. QEMU is our child and runs as our user, so the kernel lets
us (the same rule as ptrace of one's own child); nothing here needs a privilege.

The delta's plain format (encrypted as a whole by the caller) is ``MAGIC`` then records, in
ascending page order, each ``<BQI`` (kind, first page index, page count):

- ``RAW``: ``count * PAGE`` bytes follow;
- ``ZLIB``: ``<I`` length, then that many bytes, zlib of the ``count`` pages;
- ``XZLIB``: the same, of the pages XOR ``ram.img``'s (a page the guest changed a little —
  a counter, a list link — is mostly zeros then);
- ``COPY``: ``<Q`` source: the pages equal the ``count`` pages from ``source`` on, which this
  delta wrote earlier (a file's data is often in RAM twice: the page cache and a buffer);
- ``END``: first = the number of pages in the RAM (a check that the mapping matches).

Runs are compressed only when a sample page compresses (random data, e.g. encrypted or
already compressed content, is stored as it is: deflate would cost more than it saves), so a
keep stays fast and the files — and what a backup of them sends — stay small. Deltas of the
first format (no MAGIC: ``<QI`` runs of raw pages, then a run of count 0) still restore.
``parse_delta`` reads either format's records, ``encode_delta`` writes this one (a backup
stores a delta page by page and rebuilds it on restore: ``backup.rampages``).

A device state (``xen-save-devices-state``: mostly zeros, the VGA memory) is stored packed:
``DEVICES_MAGIC`` then zlib of the stream (``pack_devices`` / ``unpack_devices``); a device
state without the magic is a plain QEMU stream (states kept before).
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import ImageError, QemuError

PAGE = 4096
MAGIC = b"BSRAM2\0\0"
DEVICES_MAGIC = b"BSDEVZ1\0"
RAW, ZLIB, COPY, END, XZLIB = 0, 1, 2, 3, 4
_REC = struct.Struct("<BQI")
_LEN = struct.Struct("<I")
_SRC = struct.Struct("<Q")
_RUN_V1 = struct.Struct("<QI")
_MAX_RUN = 256  # pages read from /proc/PID/mem at once (1 MiB)
_SEGMENT = 64  # pages compressed (or not) together: 256 KiB
_SAMPLE = 1024  # bytes of a segment's first page that decide whether to compress it
_LEVEL = 1  # zlib's fastest: most of the gain (zero-filled and sparse pages) at ~1/5 the cost
_PRESENT, _SWAPPED, _FILE = 1 << 63, 1 << 62, 1 << 61


def ram_mapping(pid: int, ram_file: Path) -> tuple[int, int]:
    """(start address, length) of QEMU's mapping of ``ram_file`` (matched by device and
    inode, so a path through a symlink finds it too)."""
    try:
        st = os.stat(ram_file)
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) < 6 or int(fields[4]) != st.st_ino or int(fields[2], 16) != 0:
                    continue
                major, minor = (int(x, 16) for x in fields[3].split(":"))
                if os.makedev(major, minor) == st.st_dev:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    return start, end - start
    except OSError as exc:
        raise QemuError(f"cannot read QEMU's memory map: {exc.strerror}") from exc
    raise QemuError(f"QEMU has no mapping of {ram_file.name}")


def changed_pages(pid: int, start: int, length: int) -> list[int]:
    """Indices of the mapping's pages the guest wrote (anonymous, in RAM or swapped)."""
    count = length // PAGE
    try:
        with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:
            pagemap.seek(start // PAGE * 8)
            raw = pagemap.read(count * 8)
    except OSError as exc:
        raise QemuError(f"cannot read QEMU's page map: {exc.strerror}") from exc
    if len(raw) != count * 8:
        raise QemuError("QEMU's page map is shorter than its RAM")
    return [i for i, (entry,) in enumerate(struct.iter_unpack("<Q", raw))
            if (entry & _PRESENT and not entry & _FILE) or entry & _SWAPPED]


def _runs(indices: list[int]) -> Iterator[tuple[int, int]]:
    """Contiguous (first, count) runs of sorted page indices, at most _MAX_RUN long."""
    i = 0
    while i < len(indices):
        first = indices[i]
        n = 1
        while i + n < len(indices) and indices[i + n] == first + n and n < _MAX_RUN:
            n += 1
        yield first, n
        i += n


def _pread(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise QemuError("QEMU's RAM could not be read")
    return data


def _differing(mem: int, start: int, base: mmap.mmap, pages: list[int]
               ) -> Iterator[tuple[int, bytes]]:
    """(index, content) of each page of ``pages`` whose content differs from ``base``."""
    for first, count in _runs(pages):
        data = _pread(mem, count * PAGE, start + first * PAGE)
        for k in range(count):
            page = data[k * PAGE:(k + 1) * PAGE]
            if page != base[(first + k) * PAGE:(first + k + 1) * PAGE]:
                yield first + k, page


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _compresses(sample: bytes) -> bool:
    return len(zlib.compress(sample, _LEVEL)) < len(sample) * 3 // 4


def _literal(first: int, pages: list[bytes], base: bytes) -> Iterator[bytes]:
    """The smallest of a RAW, ZLIB or XZLIB record of contiguous pages (``base``: the same
    pages of ram.img). Each is tried only when a sample of the first page deflates well."""
    data = b"".join(pages)
    best, kind = data, RAW
    sample, base_sample = pages[0][:_SAMPLE], base[:_SAMPLE]
    if _compresses(sample):
        best, kind = zlib.compress(data, _LEVEL), ZLIB
    if base_sample.count(0) != _SAMPLE and _compresses(_xor(sample, base_sample)):
        packed = zlib.compress(_xor(data, base), _LEVEL)
        if len(packed) < len(best):
            best, kind = packed, XZLIB
    if kind == RAW or len(best) >= len(data):
        yield _REC.pack(RAW, first, len(pages))
        yield data
        return
    yield _REC.pack(kind, first, len(pages)) + _LEN.pack(len(best))
    yield best


def _span(base: mmap.mmap, first: int, count: int) -> bytes:
    return base[first * PAGE:(first + count) * PAGE]


def read_delta(pid: int, ram_file: Path) -> Iterator[bytes]:
    """The delta (see the module docstring) of QEMU's RAM against ``ram_file``, in pieces.
    The guest must be stopped."""
    start, length = ram_mapping(pid, ram_file)
    pages = changed_pages(pid, start, length)
    with open(ram_file, "rb") as base_file, \
            mmap.mmap(base_file.fileno(), 0, prot=mmap.PROT_READ) as base, \
            open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        if len(base) != length:
            raise ImageError(f"{ram_file.name} does not match QEMU's RAM size")
        yield MAGIC
        seen: dict[int, int] = {}  # crc32 of a literal page of this delta → its index
        lit: list[bytes]
        lit_first, lit = 0, []  # pending contiguous literal pages (at most one of these two)
        copy_first = copy_src = copy_n = 0  # pending contiguous copies
        for index, page in _differing(mem.fileno(), start, base, pages):
            crc = zlib.crc32(page)
            src = seen.get(crc)
            if src is not None and _pread(mem.fileno(), PAGE, start + src * PAGE) != page:
                src = None  # a crc collision: not a copy
            if src is None:
                seen.setdefault(crc, index)
            if copy_n and (src is None or index != copy_first + copy_n
                           or src != copy_src + copy_n or copy_n >= _MAX_RUN):
                yield _REC.pack(COPY, copy_first, copy_n) + _SRC.pack(copy_src)
                copy_n = 0
            if lit and (src is not None or index != lit_first + len(lit)
                        or len(lit) >= _SEGMENT):
                yield from _literal(lit_first, lit, _span(base, lit_first, len(lit)))
                lit = []
            if src is None:
                if not lit:
                    lit_first = index
                lit.append(page)
            else:
                if not copy_n:
                    copy_first, copy_src = index, src
                copy_n += 1
        if copy_n:
            yield _REC.pack(COPY, copy_first, copy_n) + _SRC.pack(copy_src)
        if lit:
            yield from _literal(lit_first, lit, _span(base, lit_first, len(lit)))
    yield _REC.pack(END, length // PAGE, 0)


class _Stream:
    """Exact reads from an iterator of byte strings."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._pieces = iter(chunks)
        self._buf = bytearray()
        self._pos = 0

    def read(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            piece = next(self._pieces, None)
            if piece is None:
                raise ImageError("the saved RAM is truncated")
            del self._buf[:self._pos]
            self._pos = 0
            self._buf += piece
        out = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return out

    def at_end(self) -> bool:
        return self._pos == len(self._buf) and next(self._pieces, None) is None


def _pwrite(fd: int, data: bytes, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def write_delta(pid: int, ram_file: Path, chunks: Iterable[bytes]) -> int:
    """Write a delta from ``read_delta`` into a new QEMU's mapping of the same ``ram_file``
    (before its device state is loaded). Returns the pages written; ImageError if the delta
    is malformed or made for RAM of another size."""
    start, length = ram_mapping(pid, ram_file)
    total = length // PAGE
    mismatch = ImageError("the saved RAM does not match this machine's RAM")
    written = 0
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem, \
            open(ram_file, "rb", buffering=0) as base:
        fd = mem.fileno()
        for kind, first, count, payload in parse_delta(chunks):
            if kind == END:
                if first != total:
                    raise mismatch
                return written
            if first + count > total:
                raise mismatch
            if kind == COPY:
                assert isinstance(payload, int)
                data = _pread(fd, count * PAGE, start + payload * PAGE)
            else:
                assert isinstance(payload, bytes)
                data = payload if kind == RAW else _xor(
                    payload, _pread(base.fileno(), count * PAGE, first * PAGE))
            _pwrite(fd, data, start + first * PAGE)
            written += count
    raise mismatch  # parse_delta ends with END or raises


Record = tuple[int, int, int, "bytes | int | None"]


def parse_delta(chunks: Iterable[bytes]) -> Iterator[Record]:
    """The records of a delta (either format) as ``(kind, first, count, payload)``: RAW with
    the pages (a ZLIB record's inflated), XZLIB with the pages XOR ram.img's (inflated), COPY
    with its source page (before ``first``, its pages written earlier), END last (``first``:
    the number of pages in the RAM; nothing may follow). ImageError if it is malformed."""
    corrupt = ImageError("the saved RAM is corrupt")
    stream = _Stream(chunks)
    head = stream.read(len(MAGIC))
    if head != MAGIC:
        yield from _parse_v1(head, stream)
        return
    while True:
        kind, first, count = _REC.unpack(stream.read(_REC.size))
        if kind == END:
            if count or not stream.at_end():
                raise corrupt
            yield END, first, 0, None
            return
        if not 0 < count <= _MAX_RUN:
            raise corrupt
        if kind == RAW:
            yield RAW, first, count, stream.read(count * PAGE)
        elif kind in (ZLIB, XZLIB):
            packed = stream.read(_LEN.unpack(stream.read(_LEN.size))[0])
            yield (RAW if kind == ZLIB else XZLIB), first, count, _inflate(packed, count * PAGE)
        elif kind == COPY:
            (src,) = _SRC.unpack(stream.read(_SRC.size))
            if src + count > first:  # a copy of pages this delta wrote before
                raise corrupt
            yield COPY, first, count, src
        else:
            raise corrupt


def encode_delta(records: Iterable[Record]) -> Iterator[bytes]:
    """A delta (this format) of records as ``parse_delta`` gives them, in ascending page
    order, END last; literal runs are deflated when they compress."""
    yield MAGIC
    for kind, first, count, payload in records:
        if kind == END:
            yield _REC.pack(END, first, 0)
            return
        if kind == COPY:
            assert isinstance(payload, int)
            yield _REC.pack(COPY, first, count) + _SRC.pack(payload)
            continue
        assert isinstance(payload, bytes)
        packed = zlib.compress(payload, _LEVEL) if kind == XZLIB or _compresses(
            payload[:_SAMPLE]) else payload
        if kind == RAW and len(packed) >= len(payload):
            yield _REC.pack(RAW, first, count)
            yield payload
            continue
        yield _REC.pack(ZLIB if kind == RAW else XZLIB, first, count) + _LEN.pack(len(packed))
        yield packed
    raise ImageError("the saved RAM is truncated")


def _inflate(packed: bytes, size: int) -> bytes:
    """Exactly ``size`` bytes from zlib data (ImageError otherwise)."""
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(packed, size)
    except zlib.error:
        raise ImageError("the saved RAM is corrupt") from None
    if len(data) != size or not inflate.eof or inflate.unconsumed_tail:
        raise ImageError("the saved RAM is corrupt")
    return data


def _parse_v1(head: bytes, stream: _Stream) -> Iterator[Record]:
    """A delta of the first format: ``<QI`` runs of raw pages, a run of count 0 last."""
    header = head + stream.read(_RUN_V1.size - len(head))
    while True:
        first, count = _RUN_V1.unpack(header)
        if count == 0:
            if not stream.at_end():
                raise ImageError("the saved RAM is corrupt")
            yield END, first, 0, None
            return
        yield RAW, first, count, stream.read(count * PAGE)
        header = stream.read(_RUN_V1.size)


def pack_devices(state: bytes) -> bytes:
    """A device state as it is stored (see the module docstring)."""
    return DEVICES_MAGIC + zlib.compress(state, _LEVEL)


def unpack_devices(chunks: Iterable[bytes]) -> bytes:
    """The QEMU stream of a stored device state (packed, or plain from before)."""
    data = b"".join(chunks)
    if not data.startswith(DEVICES_MAGIC):
        return data
    try:
        return zlib.decompress(data[len(DEVICES_MAGIC):])
    except zlib.error:
        raise ImageError("the saved device state is corrupt") from None

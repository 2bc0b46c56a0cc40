"""A guest's RAM as QEMU holds it: the pages a session changed, read and written from the host.

A session's RAM is a private (copy-on-write) mapping of its snapshot point's ``ram.img``
(``memory-backend-file,share=off``), so the pages the guest wrote are exactly the mapping's
anonymous pages: ``/proc/PID/pagemap`` tells them apart from the file's pages without reading
any. A keep reads those pages through ``/proc/PID/mem`` (guest stopped) and stores the ones
whose *content* differs from ``ram.img``; a restore writes them back into a new QEMU's mapping
before its device state is loaded. QEMU is our child and runs as our user, so the kernel lets
us (the same rule as ptrace of one's own child); nothing here needs a privilege.

The delta's plain format (encrypted as a whole by the caller): runs of pages,
``<QI`` (first page index, page count) then ``count * PAGE`` bytes, ending with a run of
count 0 whose index is the number of pages in the RAM (a check that the mapping matches).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import ImageError, QemuError

PAGE = 4096
_RUN = struct.Struct("<QI")
_MAX_RUN = 256  # pages read from /proc/PID/mem at once (1 MiB)
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
        for first, count in _runs(pages):
            data = os.pread(mem.fileno(), count * PAGE, start + first * PAGE)
            if len(data) != count * PAGE:
                raise QemuError("QEMU's RAM could not be read")
            # Keep the pages whose content differs from the base, as runs.
            run_start: int | None = None
            for k in range(count + 1):
                differs = k < count and data[k * PAGE:(k + 1) * PAGE] != \
                    base[(first + k) * PAGE:(first + k + 1) * PAGE]
                if differs and run_start is None:
                    run_start = k
                elif not differs and run_start is not None:
                    yield _RUN.pack(first + run_start, k - run_start)
                    yield data[run_start * PAGE:k * PAGE]
                    run_start = None
    yield _RUN.pack(length // PAGE, 0)


def write_delta(pid: int, ram_file: Path, chunks: Iterable[bytes]) -> int:
    """Write a delta from ``read_delta`` into a new QEMU's mapping of the same ``ram_file``
    (before its device state is loaded). Returns the pages written; ImageError if the delta
    is malformed or made for RAM of another size."""
    start, length = ram_mapping(pid, ram_file)
    total = length // PAGE
    buf = bytearray()
    written = 0
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        pieces = iter(chunks)
        while True:
            while len(buf) < _RUN.size:
                piece = next(pieces, None)
                if piece is None:
                    raise ImageError("the saved RAM is truncated")
                buf += piece
            first, count = _RUN.unpack_from(buf)
            del buf[:_RUN.size]
            if count == 0:
                if first != total or buf or next(pieces, None) is not None:
                    raise ImageError("the saved RAM does not match this machine's RAM")
                return written
            if first + count > total:
                raise ImageError("the saved RAM does not match this machine's RAM")
            need = count * PAGE
            while len(buf) < need:
                piece = next(pieces, None)
                if piece is None:
                    raise ImageError("the saved RAM is truncated")
                buf += piece
            data, offset = bytes(buf[:need]), start + first * PAGE
            done = 0
            while done < need:
                done += os.pwrite(mem.fileno(), data[done:], offset + done)
            del buf[:need]
            written += count

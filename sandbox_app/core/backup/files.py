"""Files to chunks and back: sparse-aware, content-defined chunking, uploads in parallel.

A file is recorded as its size, mode and data extents (found with ``SEEK_DATA``/``SEEK_HOLE``,
so the holes of a sparse RAM image or qcow2 cost nothing; aligned 64 KiB blocks of zeros and
chunks of zeros inside an extent are left out too, and restored as holes); what is left of each
extent is cut by FastCDC
(content-defined: inserting or changing a few bytes moves only the cut points near them, so a
file changed in place sends about what changed) into chunks stored once by their keyed hash.

An entry (JSON, inside the encrypted snapshot index)::

    {"path": "data/x.qcow2", "size": N, "mode": 0o600, "stat": [dev, ino, size, mtime_ns],
     "extents": [[offset, [[id, length], ...]], ...]}

A file whose ``stat`` matches the one in the previous snapshot is not read again (its
extents are reused), as restic does with its parent snapshot.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pyfastcdc import FastCDC

from ..errors import DiskFullError
from .repository import Repository, chunk_name
from .target import BackupError

AVG_CHUNK = 1 << 20
MIN_CHUNK = 256 << 10
MAX_CHUNK = 4 << 20
# Files changed in place (the persistent folder: every session's mount and unmount rewrite a
# few of its 4 KiB blocks — superblock, journal — in three or four spots) are cut finer, so
# such a change sends ~this much a spot (measured: 64 KiB chunks sent ~0.4 MiB a session).
FINE_AVG, FINE_MIN, FINE_MAX = 32 << 10, 8 << 10, 128 << 10
WORKERS = 8
WINDOW = 32 << 20  # bytes read at a time
ZERO_BLOCK = 64 << 10  # aligned blocks of zeros within data extents are left out
_ZEROS = bytes(ZERO_BLOCK)
IN_FLIGHT = 32  # chunks read but not yet stored: bounds memory to ~IN_FLIGHT * MAX_CHUNK

Entry = dict[str, Any]


@dataclass
class Stats:
    """What a backup or restore moved."""

    objects_sent: int = 0
    bytes_sent: int = 0  # ciphertext bytes put to the target
    bytes_skipped: int = 0  # plaintext bytes already there (or unchanged since last time)
    bytes_read: int = 0  # plaintext bytes read from local files
    objects_received: int = 0
    bytes_received: int = 0


def data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of every data region of the file (holes skipped)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from here
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size) - start
        pos = end


def _block_extents(extents: Iterable[tuple[int, int]], size: int
                   ) -> Iterator[tuple[int, int]]:
    """``extents`` widened to whole ZERO_BLOCKs and merged. Where SEEK_DATA puts an edge
    is the file system's business (ext4 counts zeros cached from a read of a hole as data):
    widened, and with the blocks of zeros in them left out, they give the same pieces — so
    the same chunks — whatever it said."""
    start = end = -1
    for offset, length in extents:
        a = offset - offset % ZERO_BLOCK
        b = min(-(-(offset + length) // ZERO_BLOCK) * ZERO_BLOCK, size)
        if a <= end:
            end = max(end, b)
            continue
        if end > start:
            yield start, end - start
        start, end = a, b
    if end > start:
        yield start, end - start


def file_stat(path: Path) -> list[int]:
    return _stamp(path.stat())


def _stamp(st: os.stat_result) -> list[int]:
    """What says a file is the one a snapshot saw, unchanged: device, inode, size, mtime."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


class ChunkSender:
    """Cuts files into chunks and stores the ones the target lacks, several at a time."""

    def __init__(self, repo: Repository, progress: Callable[[int], None] | None = None) -> None:
        self.repo = repo
        self.stats = Stats()
        self._known = set(repo.known_chunks())
        self._claimed: set[str] = set()
        self._lock = threading.Lock()
        self._cdc = FastCDC(AVG_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK,
                            seed=repo.cdc_seed())
        self._fine_cdc = FastCDC(FINE_AVG, min_size=FINE_MIN, max_size=FINE_MAX,
                                 seed=repo.cdc_seed())
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="backup-put")
        self._slots = threading.Semaphore(IN_FLIGHT)
        self._progress = progress or (lambda _n: None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ChunkSender:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _store(self, data: bytes) -> tuple[str, int]:
        try:
            object_id = self.repo.chunk_id(data)
            with self._lock:
                fresh = object_id not in self._known and object_id not in self._claimed
                if fresh:
                    self._claimed.add(object_id)
            if fresh:
                blob = self.repo.seal_chunk(object_id, data)
                self.repo.target.put(chunk_name(object_id), blob)
                with self._lock:
                    self._known.add(object_id)
                    self.stats.objects_sent += 1
                    self.stats.bytes_sent += len(blob)
            else:
                with self._lock:
                    self.stats.bytes_skipped += len(data)
            self._progress(len(data))
            return object_id, len(data)
        finally:
            self._slots.release()

    def send_file(self, path: Path, rel: str, previous: Entry | None = None, *,
                  fine: bool = False) -> Entry:
        """Store ``path``'s chunks; the entry that restores it as ``rel``. ``fine``: a file
        that changes in place, cut into smaller chunks (FINE_AVG)."""
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise BackupError(f"{path} is not a regular file")
        stamp = _stamp(st)
        entry: Entry = {"path": rel, "size": st.st_size, "mode": stat.S_IMODE(st.st_mode),
                        "stat": stamp}
        if self._reused(previous, stamp, ram=None):
            assert previous is not None
            entry["extents"] = previous["extents"]
            return entry
        runs: list[tuple[int, list[Future[tuple[str, int]]]]] = []  # contiguous chunks
        end = -1
        with open(path, "rb", buffering=0) as f:
            for offset, length in _block_extents(data_extents(f.fileno(), st.st_size),
                                                 st.st_size):
                for pos, data in self._cut(f, offset, length, fine):
                    if data.count(0) == len(data):  # zeros: a hole on restore, never sent
                        self._slots.release()  # taken by _cut
                        self._skip_zeros(len(data))
                        continue
                    if pos != end:
                        runs.append((pos, []))
                    runs[-1][1].append(self._pool.submit(self._store, data))
                    end = pos + len(data)
        entry["extents"] = [[o, [list(fut.result()) for fut in futs]] for o, futs in runs]
        if file_stat(path) != stamp:
            raise BackupError(f"{path.name} changed while it was backed up: try again")
        return entry

    def send_groups(self, path: Path, rel: str, groups: Callable[[], Iterable[bytes]],
                    extra: dict[str, Any], previous: Entry | None = None) -> Entry:
        """Store the chunks ``groups()`` yields for ``path`` (a kept RAM delta's page groups,
        ``rampages``) in order; the entry restores them through ``extra`` (the caller's).
        ``path`` unchanged since ``previous``: its entry again, nothing read."""
        st = path.stat()
        stamp = _stamp(st)
        if self._reused(previous, stamp, ram=extra.get("ram")):
            assert previous is not None
            return previous
        futures = []
        for data in groups():
            self._slots.acquire()
            self.stats.bytes_read += len(data)
            futures.append(self._pool.submit(self._store, data))
        if file_stat(path) != stamp:
            raise BackupError(f"{path.name} changed while it was backed up: try again")
        return {"path": rel, "size": 0, "mode": stat.S_IMODE(st.st_mode), "stat": stamp,
                **extra, "extents": [[0, [list(f.result()) for f in futures]]]}

    def _skip_zeros(self, n: int) -> None:
        with self._lock:
            self.stats.bytes_skipped += n
        self._progress(n)

    def _pieces(self, f: BinaryIO, offset: int, length: int
                ) -> Iterator[tuple[int, bytes, bool]]:
        """(position, data, ends) of one extent read a window at a time, without its
        ZERO_BLOCK-aligned blocks of zeros (holes on restore: nothing to send, fetch, inflate
        or write); ``ends``: a block of zeros or the extent's end follows."""
        f.seek(offset)
        pos, left = offset, length
        while left > 0:
            block = f.read(min(WINDOW, left))
            if not block:
                raise BackupError(f"{f.name} shrank while it was backed up")
            left -= len(block)
            start = 0
            for at in range(-pos % ZERO_BLOCK, len(block) - ZERO_BLOCK + 1, ZERO_BLOCK):
                if block[at:at + ZERO_BLOCK] == _ZEROS:
                    if at > start:
                        yield pos + start, block[start:at], True
                    self._skip_zeros(ZERO_BLOCK)
                    start = at + ZERO_BLOCK
            if start < len(block):
                yield pos + start, block[start:], left <= 0
            pos += len(block)

    def _cut(self, f: BinaryIO, offset: int, length: int, fine: bool
             ) -> Iterator[tuple[int, bytes]]:
        """(position, data) of the content-defined chunks of one extent. The last chunk of
        a piece that does not end is cut again with the next one: a window's end is no cut
        point."""
        cdc = self._fine_cdc if fine else self._cdc
        carry, at = b"", 0
        for pos, block, ends in self._pieces(f, offset, length):
            if carry and at + len(carry) != pos:  # zeros began the window: carry ends
                yield from self._last(at, carry)
                carry = b""
            if not carry:
                at = pos
            buf = carry + block  # alive while its chunks' views are read
            chunks = list(cdc.cut_buf(buf))
            for chunk in chunks if ends else chunks[:-1]:
                self._slots.acquire()
                data = bytes(chunk.data)
                self.stats.bytes_read += len(data)
                yield at, data
                at += len(data)
            carry = b"" if ends else bytes(chunks[-1].data)
        if carry:  # the extent's last window ended with zeros
            yield from self._last(at, carry)

    def _last(self, at: int, carry: bytes) -> Iterator[tuple[int, bytes]]:
        self._slots.acquire()
        self.stats.bytes_read += len(carry)
        yield at, carry

    def _reused(self, previous: Entry | None, stamp: list[int], *, ram: Any) -> bool:
        """Whether the file is unchanged since ``previous`` (same stat, chunks all on the
        target) *and* was stored the same way (as bytes, or as the same RAM delta's page
        groups: a delta stored as groups and now sent as a file — its context got a
        passphrase — must not come back as its groups' plaintext). Counted as skipped."""
        if previous is None or previous.get("stat") != stamp or previous.get("ram") != ram \
                or not self._all_known(previous):
            return False
        self.stats.bytes_skipped += entry_bytes(previous)
        self._progress(entry_bytes(previous))
        return True

    def _all_known(self, entry: Entry) -> bool:
        return all(i in self._known for _o, chunks in entry["extents"] for i, _n in chunks)


def entry_bytes(entry: Entry) -> int:
    return sum(length for _o, chunks in entry["extents"] for _i, length in chunks)


def entry_ids(entry: Entry) -> Iterator[str]:
    for _o, chunks in entry["extents"]:
        for object_id, _n in chunks:
            yield object_id


class ChunkFetcher:
    """Writes files back from their entries: every chunk of a batch of files is fetched,
    verified and written (``pwrite`` at its offset) by a worker, several at a time and in
    any order, so no slow chunk holds up the others; each file is fsynced once, whole."""

    def __init__(self, repo: Repository, progress: Callable[[int], None] | None = None) -> None:
        self.repo = repo
        self.stats = Stats()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="backup-get")
        self._lock = threading.Lock()
        self._progress = progress or (lambda _n: None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ChunkFetcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def fetch(self, object_id: str) -> bytes:
        """One chunk's plaintext, verified."""
        blob = self.repo.target.get(chunk_name(object_id))
        data = self.repo.open_chunk(object_id, blob, rehash=False)
        with self._lock:
            self.stats.objects_received += 1
            self.stats.bytes_received += len(blob)
        return data

    def fetch_in_order(self, entry: Entry) -> Iterator[bytes]:
        """The plaintext of ``entry``'s chunks in order, several fetched at a time."""
        ahead: collections.deque[Future[bytes]] = collections.deque()
        try:
            for object_id in entry_ids(entry):
                ahead.append(self._pool.submit(self.fetch, object_id))
                if len(ahead) >= IN_FLIGHT:
                    yield self._reported(ahead.popleft().result())
            while ahead:
                yield self._reported(ahead.popleft().result())
        finally:
            for job in ahead:
                job.cancel()

    def _reported(self, data: bytes) -> bytes:
        self._progress(len(data))
        return data

    def _put(self, fd: int, object_id: str, pos: int, window: threading.Semaphore) -> int:
        try:
            data = self.fetch(object_id)
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, pos)
                view, pos = view[n:], pos + n
            return len(data)
        finally:
            window.release()

    def restore_files(self, files: list[tuple[Entry, Path]]) -> None:
        """Write each ``entry`` to its path (sparse where the original was), fsynced."""
        window = threading.Semaphore(IN_FLIGHT)  # bounds memory to ~IN_FLIGHT chunks
        fds: list[int] = []
        jobs: list[Future[int]] = []
        finishing: list[Future[None]] = []
        unreported: collections.deque[Future[int]] = collections.deque()
        try:
            for entry, dest in files:
                dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                             0o600)
                fds.append(fd)
                os.ftruncate(fd, int(entry["size"]))
                first = len(jobs)
                for offset, chunks in entry["extents"]:
                    pos = int(offset)
                    for object_id, length in chunks:
                        window.acquire()
                        jobs.append(self._pool.submit(self._put, fd, str(object_id), pos,
                                                      window))
                        unreported.append(jobs[-1])
                        pos += int(length)
                        while unreported and unreported[0].done():  # progress: this thread
                            self._progress(unreported.popleft().result())
                # Queued after its chunks, so it never waits for a job queued behind it.
                finishing.append(self._pool.submit(self._finish, fd, int(entry["mode"]),
                                                   jobs[first:]))
            for done in finishing:
                done.result()
                while unreported and unreported[0].done():
                    self._progress(unreported.popleft().result())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError("disk full while restoring") from exc
            raise
        finally:
            every: list[Future[Any]] = [*jobs, *finishing]
            for job in every:
                job.cancel()
            for job in every:
                if not job.cancelled():
                    with contextlib.suppress(BaseException):
                        job.result()
            for fd in fds:
                os.close(fd)

    @staticmethod
    def _finish(fd: int, mode: int, jobs: list[Future[int]]) -> None:
        """Once a file's chunks are written: its mode, and one fsync."""
        for job in jobs:
            job.result()
        os.fchmod(fd, mode & 0o777)
        os.fsync(fd)


@contextlib.contextmanager
def timed(stats: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        stats[key] = time.monotonic() - t0

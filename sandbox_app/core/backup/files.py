"""Files to chunks and back: sparse-aware, content-defined chunking, uploads in parallel.

A file is recorded as its size, mode and data extents (found with ``SEEK_DATA``/``SEEK_HOLE``,
so the holes of a sparse RAM image or qcow2 cost nothing); each extent is cut by FastCDC
(content-defined: inserting or changing a few bytes moves only the cut points near them, so a
file changed in place sends about what changed) into chunks stored once by their keyed hash.

An entry (JSON, inside the encrypted snapshot index)::

    {"path": "data/x.qcow2", "size": N, "mode": 0o600, "stat": [dev, ino, size, mtime_ns],
     "extents": [[offset, [[id, length], ...]], ...]}

A file whose ``stat`` matches the one in the previous snapshot is not read again (its
extents are reused), as restic does with its parent snapshot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
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
# Files changed in place (the persistent folder: every session's mount and unmount touch a
# few of its 64 KiB qcow2 clusters) are cut finer, so such a change sends ~this much a spot.
FINE_AVG, FINE_MIN, FINE_MAX = 64 << 10, 16 << 10, 256 << 10
WORKERS = 8
WINDOW = 32 << 20  # bytes read at a time
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


def file_stat(path: Path) -> list[int]:
    st = path.stat()
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
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
        entry: Entry = {"path": rel, "size": st.st_size, "mode": stat.S_IMODE(st.st_mode),
                        "stat": stamp}
        if previous is not None and previous.get("stat") == stamp \
                and self._all_known(previous):
            entry["extents"] = previous["extents"]
            skipped = sum(length for _o, chunks in previous["extents"] for _i, length in chunks)
            self.stats.bytes_skipped += skipped
            self._progress(skipped)
            return entry
        extents: list[list[Any]] = []
        with open(path, "rb", buffering=0) as f:
            for offset, length in data_extents(f.fileno(), st.st_size):
                futures = [self._pool.submit(self._store, data)
                           for data in self._cut(f, offset, length, fine)]
                extents.append([offset, [list(fut.result()) for fut in futures]])
        if file_stat(path) != stamp:
            raise BackupError(f"{path.name} changed while it was backed up: try again")
        entry["extents"] = extents
        return entry

    def _cut(self, f: BinaryIO, offset: int, length: int, fine: bool) -> Iterator[bytes]:
        """The content-defined chunks of one extent, read a window at a time (the last
        chunk of a window is cut again with the next one: a window's end is no cut point)."""
        f.seek(offset)
        left = length
        carry = b""
        while left > 0 or carry:
            block = f.read(min(WINDOW, left)) if left > 0 else b""
            left -= len(block)
            if left > 0 and not block:
                raise BackupError(f"{f.name} shrank while it was backed up")
            buf = carry + block
            chunks = list((self._fine_cdc if fine else self._cdc).cut_buf(buf))
            last = left <= 0
            for chunk in chunks if last else chunks[:-1]:
                self._slots.acquire()
                data = bytes(chunk.data)
                self.stats.bytes_read += len(data)
                yield data
            carry = b"" if last else bytes(chunks[-1].data)

    def _all_known(self, entry: Entry) -> bool:
        return all(i in self._known for _o, chunks in entry["extents"] for i, _n in chunks)


def entry_bytes(entry: Entry) -> int:
    return sum(length for _o, chunks in entry["extents"] for _i, length in chunks)


def entry_ids(entry: Entry) -> Iterator[str]:
    for _o, chunks in entry["extents"]:
        for object_id, _n in chunks:
            yield object_id


class ChunkFetcher:
    """Writes files back from their entries, fetching chunks several at a time."""

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

    def _fetch(self, object_id: str) -> bytes:
        blob = self.repo.target.get(chunk_name(object_id))
        data = self.repo.open_chunk(object_id, blob)
        with self._lock:
            self.stats.objects_received += 1
            self.stats.bytes_received += len(blob)
        return data

    def restore_file(self, entry: Entry, dest: Path) -> None:
        """Write ``entry`` to ``dest`` (sparse where the original was), fsynced."""
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            jobs: list[tuple[int, Future[bytes]]] = []
            window = threading.Semaphore(IN_FLIGHT)

            def fetch(object_id: str) -> bytes:
                try:
                    return self._fetch(object_id)
                except BaseException:
                    window.release()
                    raise

            for offset, chunks in entry["extents"]:
                pos = int(offset)
                for object_id, length in chunks:
                    window.acquire()
                    jobs.append((pos, self._pool.submit(fetch, str(object_id))))
                    pos += int(length)
                    jobs = self._drain(fd, jobs, window, keep=IN_FLIGHT // 2)
            self._drain(fd, jobs, window, keep=0)
            os.ftruncate(fd, int(entry["size"]))
            os.fchmod(fd, int(entry["mode"]) & 0o777)
            os.fsync(fd)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(f"disk full while restoring {dest.name}") from exc
            raise
        finally:
            os.close(fd)

    def _drain(self, fd: int, jobs: list[tuple[int, Future[bytes]]],
               window: threading.Semaphore, keep: int) -> list[tuple[int, Future[bytes]]]:
        while len(jobs) > keep or (jobs and jobs[0][1].done()):
            pos, fut = jobs.pop(0)
            data = fut.result()
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, pos)
                view, pos = view[n:], pos + n
            window.release()
            self._progress(len(data))
        return jobs


@contextlib.contextmanager
def timed(stats: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        stats[key] = time.monotonic() - t0

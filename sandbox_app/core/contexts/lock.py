"""One lock a context, across processes: ``flock`` on ``state/locks/NAME.lock``.

Held while a session's start reads the context's manifest and journals itself, across a keep
(from its check that nobody kept meanwhile to its commit and compaction), by garbage
collection (which skips a context whose lock is taken) and by remove. So two keeps never
both commit, compaction never folds a layer under a session that just started, and clean-up
never erases what a keep is writing. ``flock`` locks belong to an open file, so two runners
in one process exclude each other too; the kernel drops the lock when its holder dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator

from ..storage import Paths, private_dir, validate_name


def _open(paths: Paths, name: str) -> int:
    locks = private_dir(paths.state / "locks")
    return os.open(locks / f"{validate_name(name, 'context name')}.lock",
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@contextlib.contextmanager
def try_context_lock(paths: Paths, name: str) -> Iterator[bool]:
    """Take the lock if it is free; yields whether it was taken (never waits)."""
    fd = _open(paths, name)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def context_lock(paths: Paths, name: str) -> Iterator[None]:
    """Hold the lock, waiting for it (a blocking call: from a thread or a CLI command)."""
    fd = _open(paths, name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def async_context_lock(paths: Paths, name: str) -> AsyncIterator[None]:
    """Hold the lock, waiting for it in a thread so the event loop goes on."""
    fd = _open(paths, name)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

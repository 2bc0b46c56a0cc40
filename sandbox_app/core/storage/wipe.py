"""Secure erase of files: overwrite every allocated extent with zeros, sync, unlink.

What this guarantees: on an in-place filesystem (ext4, xfs) on a hard disk, every block that
held the file's data is overwritten with zeros and flushed to the device before the file is
unlinked — NIST SP 800-88 "Clear" for that data. Holes are skipped (they hold no data) and
stay holes, so erasing a sparse 20 GiB overlay costs only what it really holds.

What it cannot guarantee:
- SSDs and other flash: the drive's wear levelling may write our zeros to fresh cells and keep
  the old ones until garbage collection; the OS cannot address them.
- Copy-on-write filesystems (btrfs, ZFS, bcachefs) and filesystem or LVM snapshots: an
  overwrite lands in new blocks and the old ones survive (and the overwrite itself can fail with
  ENOSPC, reported as DiskFullError).
- Copies made by others: swap, hibernation images, backups, the page cache of other processes.
- Journals with data journalling (ext4 ``data=journal``) may keep a copy of recent writes.
That is why everything a session writes is also encrypted under a key that is dropped
(crypto-erase): whatever survives on the medium is ciphertext under a key that no longer exists.
The overwrite is the second layer, not the only one.

Other links: zeroing goes through the inode, so another hard link to the same file sees zeros.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import BlankSlateError, DiskFullError
from ..progress import Progress

_CHUNK = 4 << 20  # large writes run at disk speed; 4 MiB of zeros is shared, never copied
_ZEROS = memoryview(bytes(_CHUNK))


class NotARegularFileError(BlankSlateError):
    """Asked to erase something that is not a regular file (device, FIFO, socket, directory)."""


@dataclass(frozen=True)
class WipeReport:
    """Bytes the file had allocated on disk (st_blocks), and bytes overwritten with zeros."""

    allocated_bytes: int
    wiped_bytes: int

    def __add__(self, other: WipeReport) -> WipeReport:
        return WipeReport(self.allocated_bytes + other.allocated_bytes,
                          self.wiped_bytes + other.wiped_bytes)


NOTHING = WipeReport(0, 0)


def allocated_extents(fd: int) -> list[tuple[int, int]]:
    """(offset, length) of each data region of the open file, skipping holes.

    Uses SEEK_DATA/SEEK_HOLE; where the filesystem cannot answer, the whole file is one
    extent (over-erasing is safe, under-erasing is not).
    """
    size = os.fstat(fd).st_size
    extents: list[tuple[int, int]] = []
    pos = 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole after pos
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if end <= start:  # cannot happen on a sane filesystem; do not loop forever
                return [(0, size)]
            extents.append((start, end - start))
            pos = end
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        return [(0, size)] if size else []
    return extents


def overwrite_open_file(fd: int, progress: Progress | None = None,
                        label: str = "file") -> WipeReport:
    """Zero every allocated extent of the open (writable) file ``fd`` and fdatasync it.

    The file is left in place: callers that must free it unlink it afterwards (or, having
    already renamed a replacement over it, just close the fd).
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFileError(f"refusing to erase {label}: not a regular file")
    allocated = st.st_blocks * 512
    extents = allocated_extents(fd)
    total = sum(length for _, length in extents)
    wiped = 0
    try:
        for start, length in extents:
            pos, end = start, start + length
            while pos < end:
                n = os.pwrite(fd, _ZEROS[:min(_CHUNK, end - pos)], pos)
                pos += n
                wiped += n
                if progress is not None:
                    progress(f"erasing {label}", wiped / total)
        os.fdatasync(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"disk full while erasing {label} (a copy-on-write "
                                "filesystem needs free space to overwrite)") from exc
        raise
    return WipeReport(allocated, wiped)


def secure_erase(path: Path, progress: Progress | None = None) -> WipeReport:
    """Overwrite ``path``'s allocated extents with zeros, fdatasync, unlink, fsync the dir.

    Never follows a symlink: a symlink at ``path`` is itself removed and its target left
    alone. Devices, FIFOs, sockets and directories are refused (NotARegularFileError).
    A missing file is not an error (returns an empty report).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return NOTHING
    if stat.S_ISLNK(st.st_mode):
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return NOTHING
    if not stat.S_ISREG(st.st_mode):
        raise NotARegularFileError(f"refusing to erase {path}: not a regular file")
    try:
        fd = _open_for_overwrite(path)
    except FileNotFoundError:
        return NOTHING
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # swapped for a symlink/FIFO meanwhile
            raise NotARegularFileError(f"refusing to erase {path}: not a regular file") from exc
        raise
    try:
        report = overwrite_open_file(fd, progress, path.name)
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return report


def _open_for_overwrite(path: Path) -> int:
    # O_NONBLOCK: should a FIFO be swapped in after lstat, open fails instead of hanging.
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(path, os.O_WRONLY | flags)
    except PermissionError:
        pass
    # A read-only file of ours (chmod 0444): add u+w through an fd, so that nothing swapped
    # in at ``path`` meanwhile gets its mode changed, then reopen and check it is the same.
    rfd = os.open(path, os.O_RDONLY | flags)
    try:
        st = os.fstat(rfd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFileError(f"refusing to erase {path}: not a regular file")
        os.fchmod(rfd, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)
        fd = os.open(path, os.O_WRONLY | flags)
    finally:
        os.close(rfd)
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise NotARegularFileError(f"refusing to erase {path}: it changed while being opened")
    return fd


def erase_tree(path: Path, progress: Progress | None = None) -> WipeReport:
    """Securely erase every regular file below ``path``, then remove the whole tree.

    Symlinks (to files or directories) are removed, never followed; sockets and FIFOs are
    unlinked (they hold no data). ``path`` may also be a single file or missing.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return NOTHING
    if not stat.S_ISDIR(st.st_mode):
        if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            return secure_erase(path, progress)
        path.unlink()
        return NOTHING
    report = NOTHING
    # Bottom-up, and os.walk never descends into symlinked directories.
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        here = Path(dirpath)
        for name in filenames:
            entry = here / name
            mode = os.lstat(entry).st_mode
            if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                report = report + secure_erase(entry, progress)
            else:
                entry.unlink()
        for name in dirnames:
            entry = here / name
            if entry.is_symlink():
                entry.unlink()
            else:
                entry.rmdir()
    path.rmdir()
    _fsync_dir(path.parent)
    return report


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

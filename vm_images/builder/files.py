"""Files and file trees: writes, removal, the initramfs archive and the root disk."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from .commands import capture, run, tool
from .report import log


def write_file(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """``data`` into ``path`` (parents made) with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Like ``write_file``, but a reader sees the old file or the whole new one, never a
    part (written beside, synced, renamed over)."""
    tmp = path.with_name(path.name + ".tmp")
    write_file(tmp, data, mode)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.rename(path)


def remove(path: Path) -> None:
    """Remove a file, a symlink (not what it points to) or a whole tree; gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def symlink(path: Path, target: str) -> None:
    """Make ``path`` a symlink to ``target``, replacing what is there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove(path)
    path.symlink_to(target)


def write_cpio_gz(root: Path, out: Path) -> None:
    """The tree under ``root`` as a gzip'd newc cpio archive (an initramfs), sorted, with
    no device or inode numbers, and a gzip header without a time stamp. (Level 6: level 9
    makes the initramfs 0.7% smaller and takes a second longer.)"""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = b"".join(n.encode() + b"\0" for n in [".", *names])
    archive = capture("cpio", "--null", "--create", "--format=newc", "--reproducible",
                      "--quiet", cwd=root, stdin=listing)
    write_file(out, gzip.compress(archive, compresslevel=6, mtime=0))


def make_disk(rootfs: Path, out: Path, *, size_mib: int, label: str, compress: bool) -> None:
    """An ext4 file system made from ``rootfs`` by ``mke2fs -d`` (no loop mount; owners and
    modes as they are in the tree), as qcow2 in ``out`` (sparse; with ``compress``, zstd
    compressed clusters, for a base that is mostly files).

    Inode tables and the journal are initialised now, or the guest's ext4lazyinit thread
    would zero them after every cold boot, burning TCG time and writing into the overlay.
    """
    raw = out.with_name(out.name + ".raw")
    log.info(f"mke2fs -t ext4 -d {rootfs.name} ({size_mib} MiB, sparse)")
    try:
        run(tool("mke2fs", "e2fsprogs"), "-q", "-F", "-t", "ext4", "-L", label, "-m", "0",
            "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", rootfs, raw, f"{size_mib}M")
        options = ["-c", "-o", "compression_type=zstd,cluster_size=65536"] if compress else []
        log.info("qemu-img convert" + (" -c (zstd)" if compress else ""))
        run(tool("qemu-img", "qemu-utils"), "convert", "-q", "-f", "raw", "-O", "qcow2",
            *options, "-m", "4", "-W", raw, out)
    finally:
        raw.unlink(missing_ok=True)

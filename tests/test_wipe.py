"""Secure erase: zeros over every allocated extent, then unlink; never follow links."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sandbox_app.core.errors import DiskFullError
from sandbox_app.core.storage import erase_tree, secure_erase
from sandbox_app.core.storage.wipe import NotARegularFileError, allocated_extents

MiB = 1 << 20


def _sparse_file(path: Path) -> bytes:
    """Random data at 0 and at 8 MiB, a hole between, and a hole at the end (size 12 MiB)."""
    data = os.urandom(300_000)
    with open(path, "wb") as f:
        f.write(data)
        f.seek(8 * MiB)
        f.write(data)
        f.truncate(12 * MiB)
    return data


def _extents(path: Path) -> list[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return allocated_extents(fd)
    finally:
        os.close(fd)


def test_allocated_extents_skip_holes(tmp_path: Path) -> None:
    _sparse_file(tmp_path / "f")
    extents = _extents(tmp_path / "f")
    assert len(extents) == 2
    assert extents[0][0] == 0 and extents[1][0] <= 8 * MiB < extents[1][0] + extents[1][1]
    assert sum(length for _, length in extents) < MiB


def test_erase_writes_zeros_over_the_data_before_unlinking(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    _sparse_file(victim)
    extents_before = _extents(victim)
    survivor = tmp_path / "hardlink"
    os.link(victim, survivor)  # keeps the inode alive so we can look at what was written
    secure_erase(victim)
    assert not victim.exists()
    content = survivor.read_bytes()
    assert len(content) == 12 * MiB
    assert content == bytes(12 * MiB)
    assert _extents(survivor) == extents_before  # the holes stayed holes


def test_report_counts_allocated_and_wiped_bytes(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    _sparse_file(victim)
    allocated = victim.stat().st_blocks * 512
    data_bytes = sum(length for _, length in _extents(victim))
    report = secure_erase(victim)
    assert report.allocated_bytes == allocated
    assert report.wiped_bytes == data_bytes
    assert 600_000 <= report.wiped_bytes < MiB  # not the 12 MiB apparent size


def test_progress_is_reported_by_bytes(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * (9 * MiB))
    seen: list[float | None] = []
    secure_erase(tmp_path / "big", lambda _phase, fraction: seen.append(fraction))
    assert len(seen) == 3  # 4 MiB writes
    assert seen == sorted(x for x in seen if x is not None) and seen[-1] == 1.0


def test_symlink_is_removed_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert secure_erase(link).wiped_bytes == 0
    assert not link.is_symlink()
    assert target.read_bytes() == b"keep me"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotARegularFileError, match="not a regular file"):
        secure_erase(fifo)
    assert fifo.exists()


def test_missing_file_is_an_empty_report(tmp_path: Path) -> None:
    report = secure_erase(tmp_path / "nothing")
    assert (report.allocated_bytes, report.wiped_bytes) == (0, 0)


def test_enospc_becomes_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f").write_bytes(b"secret")

    def full(*_args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(DiskFullError):
        secure_erase(tmp_path / "f")


def test_erase_tree_erases_files_and_removes_links_without_following(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"keep")
    tree = tmp_path / "d"
    (tree / "e" / "f").mkdir(parents=True)
    (tree / "a").write_bytes(b"x" * 5000)
    (tree / "e" / "b").write_bytes(b"y" * 7000)
    (tree / "e" / "f" / "c").write_bytes(b"")
    (tree / "file-link").symlink_to(outside / "keep")
    (tree / "e" / "dir-link").symlink_to(outside)
    os.mkfifo(tree / "e" / "fifo")
    report = erase_tree(tree)
    assert report.wiped_bytes == 12000
    assert not tree.exists()
    assert (outside / "keep").read_bytes() == b"keep"


def test_erase_tree_of_missing_directory(tmp_path: Path) -> None:
    assert erase_tree(tmp_path / "nothing").wiped_bytes == 0


def test_read_only_file_is_made_writable_and_erased(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "ro"
    victim.write_bytes(b"secret")
    victim.chmod(0o444)
    survivor = tmp_path / "link"
    os.link(victim, survivor)
    real_open = os.open
    denied: list[int] = []

    def open_as_non_root(path: object, flags: int, *args: int) -> int:
        # Root ignores file modes; refuse the first write-open as a normal user would be.
        if path == victim and flags & os.O_WRONLY and not denied:
            denied.append(flags)
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_as_non_root)
    assert secure_erase(victim).wiped_bytes == 6
    assert denied and not victim.exists()
    assert survivor.read_bytes() == bytes(6)

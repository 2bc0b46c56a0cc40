"""qcow2 layers and overlays through qemu-img.

Secrets go to qemu-img the same way as to QEMU: ``--object secret,file=/dev/fd/N`` on an
inherited pipe, never argv or environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DiskFullError, ImageError
from .argv import Layer
from .process import find_qemu, secret_pipe, short_error

# Fast LUKS header: the key is random (full entropy), so key stretching buys nothing.
# Sub-clusters (``extended_l2``): a guest write of 4 KiB into a fresh 64 KiB cluster writes
# those 4 KiB (2 KiB granularity) and leaves the rest a hole reading through to the layer
# below, instead of copying 60 KiB of it up, encrypted. A session's overlay, its kept layer
# and the persistent volume then hold (and a wipe zeroes, and a backup sends) about what the
# guest wrote: a keep after writing 1 MiB of files shrank from 2.2 to ~1.1 MiB on disk.
_LUKS_OPTS = ("encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,"
              "extended_l2=on")


async def _qemu_img(args: Sequence[str], secret: bytes | None = None,
                    secrets: Sequence[bytes | None] = ()) -> str:
    """Run qemu-img with secrets inherited as fds: ``secret`` is ``sec0``, ``secrets[i]`` is
    ``sec{i}`` (None entries are skipped)."""
    binary = find_qemu("qemu-img")
    fds: list[int] = []
    argv = [binary, args[0]]
    for i, value in enumerate([secret] if secret is not None else secrets):
        if value is None:
            continue
        fd = secret_pipe(value)
        fds.append(fd)
        argv += ["--object", f"secret,id=sec{i},file=/dev/fd/{fd},format=raw"]
    argv += list(args[1:])
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=fds,
        )
        try:
            out, err = await proc.communicate()
        except BaseException:
            # Cancelled: qemu-img must not go on to create a file nobody tracks any more.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
    finally:
        for fd in fds:
            os.close(fd)
    if proc.returncode != 0:
        msg = err.decode(errors="replace").strip().splitlines()
        text = short_error(msg[-1]) if msg else f"qemu-img {args[0]} failed"
        if "No space left" in text:
            raise DiskFullError(f"disk full: {text}")
        raise ImageError(text)
    return out.decode(errors="replace")


_LUKS_ATTEMPTS = 10


async def _qemu_img_formatting(args: Sequence[str], secret: bytes | None, path: Path) -> None:
    """qemu-img writing ``path``, which may format LUKS. QEMU 7.2's PBKDF benchmark (run
    while formatting LUKS) reads the thread's CPU time, which on a busy (virtual) machine
    sometimes does not advance: "Unable to get accurate CPU usage". It is harmless: retry,
    backing off."""
    for attempt in range(_LUKS_ATTEMPTS):
        try:
            await _qemu_img(args, secret)
            return
        except ImageError as exc:
            if "accurate CPU usage" not in str(exc) or attempt == _LUKS_ATTEMPTS - 1:
                raise
            path.unlink(missing_ok=True)
            await asyncio.sleep(0.05 * (attempt + 1))


async def create_overlay(path: Path, backing: Path | None, size: int,
                         secret: bytes | None) -> None:
    """A new qcow2 on top of ``backing`` (relative name recorded; None: a disk of its own,
    empty), LUKS-encrypted if secret.

    The backing file is not opened (``-u``): the chain is always given explicitly to QEMU.
    """
    args = ["create", "-q", "-f", "qcow2"]
    if backing is not None:
        args += ["-u", "-b", os.path.relpath(backing, path.parent), "-F", "qcow2"]
    if secret is not None:
        args += ["-o", _LUKS_OPTS]
    args += [str(path), str(size)]
    try:
        await _qemu_img_formatting(args, secret, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    os.chmod(path, 0o600)


async def create_volume(path: Path, size: int, secret: bytes, workdir: Path) -> None:
    """A LUKS qcow2 of ``size`` bytes holding an empty ext4 file system (journaled: a
    session may be killed at any moment), made without root: ``mke2fs`` on a sparse raw file
    in ``workdir``, converted into the encrypted qcow2. The raw file holds nothing but the
    empty file system's metadata, and is erased."""
    mke2fs = shutil.which("mke2fs") or shutil.which("mke2fs", path="/usr/sbin:/sbin")
    if mke2fs is None:
        raise ImageError("mke2fs not found: install the Debian package 'e2fsprogs'")
    raw = workdir / f"{path.name}.raw"
    try:
        with open(raw, "wb") as f:
            f.truncate(size)
        proc = await asyncio.create_subprocess_exec(
            mke2fs, "-q", "-F", "-t", "ext4", "-L", "persistent", "-m", "0",
            "-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0", str(raw),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise ImageError(f"mke2fs: {short_error(err.decode(errors='replace').strip())}")
        await _qemu_img_formatting(["convert", "-q", "-f", "raw", "-O", "qcow2",
                                    "-o", _LUKS_OPTS, str(raw), str(path)], secret, path)
        os.chmod(path, 0o600)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        raw.unlink(missing_ok=True)


async def virtual_size(path: Path) -> int:
    """The guest-visible size of an (unencrypted) qcow2 image."""
    info: dict[str, Any] = json.loads(
        await _qemu_img(["info", "--output=json", "-U", str(path)])
    )
    return int(info["virtual-size"])


async def check_chain(layers: Sequence[Layer]) -> None:
    """``qemu-img check`` of every layer (each opened with the chain below it and its key)."""
    for i, layer in enumerate(layers):
        if not layer.path.exists():
            raise ImageError(f"disk layer missing: {layer.path.name}")
        try:
            await _qemu_img(["check", "-q", "-U", _chain_json(layers[:i + 1])],
                            secrets=[x.secret for x in layers[:i + 1]])
        except ImageError as exc:
            raise ImageError(f"disk layer {layer.path.name} is damaged: {exc}") from exc


def _chain_json(layers: Sequence[Layer]) -> str:
    """A ``json:`` filename for the top of ``layers`` with the whole chain spelled out, so
    each encrypted layer gets its own secret (``sec{i}`` for ``layers[i]``)."""
    node: dict[str, Any] | None = None
    for i, layer in enumerate(layers):
        opts: dict[str, Any] = {"driver": "qcow2",
                                "file": {"driver": "file", "filename": str(layer.path)}}
        if layer.secret is not None:
            opts["encrypt"] = {"key-secret": f"sec{i}"}
        if node is not None:
            opts["backing"] = node
        node = opts
    return "json:" + json.dumps(node)


async def commit_top(layers: Sequence[Layer]) -> None:
    """Merge the top layer into the one below it (one step of compaction), in place.

    Crash-safe: while it runs, the top layer still masks the same ranges with the same data,
    so the chain shows exactly the same disk at every instant; afterwards the top layer is
    redundant and the caller drops it from the manifest (atomically) and erases it.
    """
    if len(layers) < 2:
        raise ValueError("nothing to commit into")
    await _qemu_img(["commit", "-q", "-d", _chain_json(layers)],
                    secrets=[layer.secret for layer in layers])


def allocated_bytes(path: Path) -> int:
    """Bytes actually allocated on the host filesystem for ``path``."""
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


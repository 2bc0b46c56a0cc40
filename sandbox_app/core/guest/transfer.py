"""Files in and out of a session, through the guest agent, without opening a hole.

Out: the guest's Downloads folder is listed with ``find`` (regular files only: symlinks,
devices and fifos are refused), each name is sanitised for the host, the content is streamed
in chunks to a temp file beside the target and renamed into place; an existing host file is
never overwritten (a " (1)" suffix is added). Nothing copied out is opened. Sizes and counts
are capped, every agent call has a timeout, so a lying or stalling guest gets an error.

In: a host file is streamed into a fresh root-only directory in the guest, then put into the
Downloads folder under a sanitised name by the folder's owner, created exclusively (no link
the guest user planted is followed); a copy that fails half-way leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import tempfile
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from ..errors import BlankSlateError, DiskFullError, GuestError
from ..storage import secure_erase
from .agent import GuestAgent

MAX_FILE_BYTES = 4 << 30
MAX_FILES = 1000
MAX_NAME = 200
_CHUNK = 4 << 20

ProgressBytes = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class GuestFile:
    """A regular file in one of the guest's folders (Downloads, Persistent)."""

    name: str  # as the guest reported it (untrusted)
    size: int
    # The guest folder it is in ("": the one the caller names); not part of its identity:
    # "saved to the host" is about the file, wherever it was moved since.
    folder: str = field(default="", compare=False)


def sanitize_name(name: str) -> str:
    """A safe host file name: no path separators, no ``..``, no control characters."""
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.replace("/", "_").replace("\\", "_").strip().lstrip(".")
    name = re.sub(r"\s+", " ", name)
    if len(name.encode()) > MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext if dot and len(ext) <= 16 else ""
        base = (stem if dot else name).encode()[: MAX_NAME - len(ext) - 1]
        name = base.decode(errors="ignore") + ("." + ext if ext else "")
    return name or "download"


def default_save_dir(context: str) -> Path:
    """Where the GUI offers to save a context's downloads: ``~/Downloads/Blank Slate/NAME``."""
    return Path(platformdirs.user_downloads_dir()) / "Blank Slate" / sanitize_name(context)


def unique_path(directory: Path, name: str) -> Path:
    """``directory/name``, or ``name (1)``, ``name (2)``… if that exists."""
    path = directory / name
    stem, suffix = path.stem, path.suffix
    n = 1
    while path.exists() or path.is_symlink():
        path = directory / f"{stem} ({n}){suffix}"
        n += 1
    return path


async def list_downloads(agent: GuestAgent, folder: str, timeout: float = 30.0
                         ) -> list[GuestFile]:
    """Regular files directly in ``folder`` (NUL-separated, so any name survives)."""
    res = await agent.shell(
        f"cd {shlex.quote(folder)} 2>/dev/null || exit 0; "
        "find . -maxdepth 1 -type f -print0 | xargs -0 -r sh -c "
        "'for f; do printf \"%s\\000%s\\000\" \"$(stat -c %s -- \"$f\")\" \"$f\"; done' sh",
        timeout=timeout)
    if res.exit_code != 0:
        raise GuestError("could not list the guest's downloads")
    parts = res.stdout.split(b"\0")
    files = []
    for size, name in zip(parts[0::2], parts[1::2], strict=False):
        if not name.startswith(b"./"):
            continue
        try:
            files.append(GuestFile(name[2:].decode(errors="replace"), int(size), folder))
        except ValueError:
            continue
        if len(files) > MAX_FILES:
            raise GuestError(f"more than {MAX_FILES} files in the guest's downloads")
    return files


async def move_in_guest(agent: GuestAgent, item: GuestFile, folder: str, dest: str) -> None:
    """Move a regular file from ``folder`` into ``dest`` in the guest (say, a download into
    the persistent folder), never over a file of the same name there."""
    src = f"{(item.folder or folder).rstrip('/')}/{item.name}"
    target = f"{dest.rstrip('/')}/{item.name}"
    res = await agent.shell(
        f"test -f {shlex.quote(src)} && test ! -L {shlex.quote(src)} || exit 3; "
        f"test -e {shlex.quote(target)} && exit 4; "
        f"mv -n -- {shlex.quote(src)} {shlex.quote(target)}", timeout=120)
    name = sanitize_name(item.name)
    if res.exit_code == 3:
        raise GuestError(f"'{name}' is not a regular file in the guest")
    if res.exit_code == 4:
        raise GuestError(f"'{name}' is already in {dest}")
    if res.exit_code != 0:
        raise GuestError(f"'{name}' could not be moved: "
                         + (res.stderr or res.stdout).decode(errors="replace").strip()[-200:])


async def save_to_host(agent: GuestAgent, folder: str, item: GuestFile, target_dir: Path,
                       progress: ProgressBytes | None = None) -> Path:
    """Copy one guest file to ``target_dir`` (never overwriting); returns the host path."""
    if item.size > MAX_FILE_BYTES:
        raise BlankSlateError(f"'{sanitize_name(item.name)}' is larger than the "
                              f"{MAX_FILE_BYTES >> 30} GiB limit")
    target_dir.mkdir(parents=True, exist_ok=True)
    target = unique_path(target_dir, sanitize_name(item.name))
    guest_path = f"{(item.folder or folder).rstrip('/')}/{item.name}"
    # Refuse anything that is not (still) a regular file: symlinks could point anywhere.
    check = await agent.shell(f"test -f {shlex.quote(guest_path)} && "
                              f"test ! -L {shlex.quote(guest_path)}", timeout=10)
    if check.exit_code != 0:
        raise GuestError(f"'{sanitize_name(item.name)}' is not a regular file in the guest")
    done = 0
    tmp: Path | None = None  # ours only once created: never erase a file we did not make
    try:
        # A fresh random name (O_EXCL, no symlink followed), not ".NAME.part": a file of
        # that name already there is someone else's.
        fd, name = tempfile.mkstemp(prefix=".blankslate-", suffix=".part", dir=target_dir)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as out:
            async for chunk in agent.read_file_chunks(guest_path, _CHUNK):
                done += len(chunk)
                if done > max(item.size, 0) + _CHUNK or done > MAX_FILE_BYTES:
                    raise GuestError("the guest sent more data than the file's size")
                out.write(chunk)
                if progress:
                    progress(done, item.size)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, target)  # fails rather than overwrite a file created meanwhile
        tmp.unlink()
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                secure_erase(tmp)
        if isinstance(exc, OSError) and exc.errno == 28:
            raise DiskFullError(f"disk full while saving {target.name}") from exc
        raise
    return target


# Puts a file staged in a root-only directory into the user's folder. The shell's working
# directory pins the folder (checked to be the very path asked for, no link on the way), the
# file is created there exclusively (noclobber: O_CREAT|O_EXCL, which never follows a link)
# and written through that one descriptor; it is handed to the folder's owner without
# following a link either (chown -h). A copy that fails half-way is removed.
# $1 staged file, $2 folder (absolute), $3 name.
_PLACE = r"""
cd -P -- "$2" 2>/dev/null && [ "$(pwd -P)" = "$2" ] ||
    { echo "$2 is not a plain directory" >&2; exit 3; }
set -C
exec 3> "./$3" || exit 5
cat < "$1" >&3 || { rm -f -- "./$3"; exit 6; }
exec 3>&-
chown -h "$(stat -c %u:%g .)" "./$3"
"""


async def send_to_guest(agent: GuestAgent, source: Path, folder: str,
                        progress: ProgressBytes | None = None) -> str:
    """Copy a host file into the guest's ``folder``; returns the guest path."""
    if not source.is_file() or source.is_symlink():
        raise BlankSlateError(f"{source}: not a regular file")
    size = source.stat().st_size
    if size > MAX_FILE_BYTES:
        raise BlankSlateError(f"{source.name} is larger than the {MAX_FILE_BYTES >> 30} GiB limit")
    await agent.shell(f"mkdir -p {shlex.quote(folder)}", timeout=10)
    names = {f.name for f in await list_downloads(agent, folder)}
    name = sanitize_name(source.name)
    stem, dot, ext = name.rpartition(".")
    n = 1
    while name in names:
        name = f"{stem} ({n}).{ext}" if dot else f"{ext} ({n})"
        n += 1
    guest_path = f"{folder.rstrip('/')}/{name}"
    # The agent writes as root and follows links: it writes only into a fresh directory of
    # root's; the file reaches the user's folder through _PLACE.
    made = await agent.shell("mktemp -d /var/tmp/blankslate-in.XXXXXX 2>/dev/null || "
                             "mktemp -d /tmp/blankslate-in.XXXXXX", timeout=10)
    staging = made.stdout.decode(errors="replace").strip()
    if made.exit_code != 0 or not staging.startswith(("/var/tmp/blankslate-in.",
                                                       "/tmp/blankslate-in.")):
        raise GuestError("could not make a staging directory in the guest")
    staged = f"{staging}/file"
    done = 0
    try:
        handle = await agent.call("guest-file-open", {"path": staged, "mode": "wb"})
        try:
            with open(source, "rb") as f:
                while chunk := f.read(_CHUNK):
                    await agent.write_chunk(handle, chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, size)
            await agent.call("guest-file-flush", {"handle": handle})
        finally:
            with contextlib.suppress(GuestError):
                await agent.call("guest-file-close", {"handle": handle}, timeout=5)
        placed = await agent.exec(["/bin/sh", "-c", _PLACE, "sh", staged,
                                   folder.rstrip("/") or "/", name],
                                  timeout=max(30.0, size / (20 << 20)))
        if placed.exit_code != 0:
            why = placed.stderr.decode(errors="replace").strip().splitlines()
            raise GuestError(f"could not put {name} into the guest's {folder}"
                             + (f": {why[-1][:120]}" if why else ""))
    finally:
        with contextlib.suppress(GuestError):
            await agent.shell(f"rm -rf -- {shlex.quote(staging)}", timeout=10)
    return guest_path

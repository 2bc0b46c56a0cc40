"""QEMU's binaries and the process helpers every QEMU-family child shares.

Children die with us (PR_SET_PDEATHSIG) and secrets reach them through inherited pipes,
never argv, environment or disk.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess

from ..errors import QemuError

_PR_SET_PDEATHSIG = 1


def find_qemu(name: str = "qemu-system-x86_64") -> str:
    """Path of a QEMU binary, or a QemuError telling the user what to install."""
    override = os.environ.get("BLANKSLATE_QEMU") if name == "qemu-system-x86_64" else None
    path = override or shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        pkg = "qemu-system-x86" if name.startswith("qemu-system") else "qemu-utils"
        raise QemuError(f"{name} not found: install the Debian package '{pkg}'")
    return path


def qemu_version() -> str:
    """The version string of the QEMU binary we run (part of every snapshot's identity)."""
    out = subprocess.run(
        [find_qemu(), "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    return out.splitlines()[0].strip() if out else "unknown"


def set_pdeathsig() -> None:
    """In the child: die when the parent dies, so no QEMU outlives a crashed app."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def secret_pipe(secret: bytes) -> int:
    """A pipe already holding ``secret`` and closed for writing; returns the read end."""
    r, w = os.pipe()
    try:
        os.write(w, secret)
    finally:
        os.close(w)
    return r


_JSON_BLOB = re.compile(r"'?(json:)?\{.*\}'?")


def short_error(text: str, limit: int = 200) -> str:
    """QEMU's or qemu-img's last error line, fit for a one-line message: the JSON a disk
    chain is spelled in (paths, key ids) becomes "the disk", and it is cut at ``limit``."""
    text = _JSON_BLOB.sub("the disk", text.strip().removeprefix("qemu-img: "))
    return text if len(text) <= limit else text[:limit - 1] + "…"

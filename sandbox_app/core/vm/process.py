"""QEMU's binaries and the process helpers every QEMU-family child shares.

Children die with us (PR_SET_PDEATHSIG), never dump core (RLIMIT_CORE 0: guest RAM and keys
are in their memory), never run as root (``qemu_user``), and secrets reach them through
inherited pipes, never argv, environment or disk. The app itself is made non-dumpable at
start (``forbid_core_dumps``).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import QemuError, UsageError
from ..storage import Paths

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4


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


def child_setup() -> None:
    """``preexec_fn`` of every QEMU-family child: die with us, and never write a core
    file (it would hold guest RAM and disk keys). Runs after Popen's own user switch, so
    the parent-death signal survives it."""
    set_pdeathsig()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def forbid_core_dumps() -> None:
    """Make this process (the app: it holds keys) non-dumpable: no core file, no
    /proc/PID/mem or ptrace for other processes of the same user. Called once at start."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


@dataclass(frozen=True)
class RunAs:
    """The unprivileged user QEMU and passt run as when the app runs as root."""

    uid: int
    gid: int

    @property
    def runas(self) -> str:
        """QEMU's ``-runas`` value."""
        return f"{self.uid}:{self.gid}"

    def popen_kwargs(self) -> dict[str, Any]:
        """Popen's own switch to this user before exec (no supplementary groups)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def helper_popen_kwargs() -> dict[str, Any]:
    """Popen keyword arguments for a helper that needs no file of ours (passt and its
    namespace): ``child_setup``, and under root the switch to ``qemu_user`` before exec."""
    runas = qemu_user()
    return {"preexec_fn": child_setup, **(runas.popen_kwargs() if runas else {})}


def qemu_user(euid: int | None = None) -> RunAs | None:
    """Who QEMU and passt run as: None (ourselves) unless we are root. Under root:
    ``BLANKSLATE_QEMU_USER``, else the owner of the data directory (or of
    ``BLANKSLATE_HOME``) if that is not root, else ``nobody``."""
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    name = os.environ.get("BLANKSLATE_QEMU_USER")
    if name:
        try:
            pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, ValueError):
            raise UsageError(f"BLANKSLATE_QEMU_USER: no user '{name[:40]}'") from None
        if pw.pw_uid == 0:
            raise UsageError("BLANKSLATE_QEMU_USER must not be root: QEMU never runs as root")
        return RunAs(pw.pw_uid, pw.pw_gid)
    home = os.environ.get("BLANKSLATE_HOME")
    for where in (Paths.from_env().data, *([Path(home)] if home else [])):
        try:
            st = where.stat()
        except OSError:
            continue
        if st.st_uid != 0:
            try:
                return RunAs(st.st_uid, pwd.getpwuid(st.st_uid).pw_gid)
            except KeyError:
                return RunAs(st.st_uid, st.st_gid)
        break
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return RunAs(65534, 65534)
    return RunAs(nobody.pw_uid, nobody.pw_gid)


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

"""Where log records go: stderr (warnings, or everything with ``-v``) and a rotating log file
under the platform's log directory, so the errors of an app started from the menu are kept.

The file is 0600 in a 0700 folder and rotates at 1 MiB (three old files). Records carry no
keys or passphrases: secrets reach QEMU through file descriptors and are never formatted
into a message. Several blankslate processes may append to the same file; each rotates it on
its own, which at worst puts a few lines in the previous file.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
from pathlib import Path
from typing import Any

from .core.storage import Paths
from .core.storage.paths import private_dir

LOG_NAME = "blankslate.log"
MAX_BYTES = 1 << 20
BACKUPS = 3
# extra= for a record only the file should get (the user already saw it as one line).
FILE_ONLY: dict[str, Any] = {"file_only": True}


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are created 0600 (not by the umask)."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename,
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        os.fchmod(fd, 0o600)
        return io.TextIOWrapper(io.FileIO(fd, "a"), encoding=self.encoding,
                                errors=self.errors, write_through=True)


class _StderrFilter(logging.Filter):
    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "file_only", False):
            return False
        # qemu.qmp logs expected disconnects as errors; we report our own.
        return self.verbose or not record.name.startswith("qemu.qmp")


def _replace_handler(kind: type[logging.Handler], new: logging.Handler) -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if type(h) is kind]:
        root.removeHandler(old)
        old.close()
    root.addHandler(new)


def log_to_stderr(verbose: bool) -> None:
    """Warnings and errors on stderr; with ``verbose`` every debug record."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("blankslate: %(levelname)s: %(message)s"))
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    handler.addFilter(_StderrFilter(verbose))
    _replace_handler(logging.StreamHandler, handler)
    root = logging.getLogger()
    root.setLevel(min(root.level or logging.WARNING, handler.level))
    # Its expected disconnects come as errors: kept out of the log unless debugging.
    logging.getLogger("qemu.qmp").setLevel(logging.DEBUG if verbose else logging.CRITICAL)


def start_log_file(paths: Paths, debug: bool = False) -> Path:
    """Append this process's records to ``paths.logs/blankslate.log`` (info and up, or debug
    with ``debug``) and return that file's path."""
    path = private_dir(paths.logs) / LOG_NAME
    handler = _PrivateRotatingFile(path, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                   encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    level = logging.DEBUG if debug else logging.INFO
    handler.setLevel(level)
    _replace_handler(_PrivateRotatingFile, handler)
    root = logging.getLogger()
    root.setLevel(min(root.level, level))
    if debug:
        logging.getLogger("qemu.qmp").setLevel(logging.DEBUG)
    return path

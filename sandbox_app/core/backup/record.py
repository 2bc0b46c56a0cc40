"""When each context was last backed up: ``backups.json`` in the state directory.

    {"version": 1, "contexts": {"personal": {"at": 1764300000.0, "snapshot": "2026…",
                                             "target": "/media/usb/blankslate"}}}

``backup()`` writes it after a snapshot index is stored (so the CLI and the app both do);
the launcher reads it for "backed up 3 hours ago". It says nothing the target does not
already know, holds no secret, and is only a convenience: a missing or broken file reads as
"never backed up", and failing to write it never fails a backup.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import BlankSlateError
from ..storage import Paths, atomic_write_json, private_dir

log = logging.getLogger(__name__)

RECORD = "backups.json"
VERSION = 1


@dataclass(frozen=True)
class LastBackup:
    """A context's newest backup made from this machine."""

    context: str
    at: float  # seconds since the epoch
    snapshot: str
    target: str  # the target's description: a folder or s3://BUCKET/PREFIX


def _path(paths: Paths) -> Path:
    return paths.state / RECORD


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    """One writer at a time (the app and a CLI backup may end together)."""
    private_dir(paths.state)
    fd = os.open(paths.state / f".{RECORD}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(paths: Paths) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(_path(paths).read_text())
        contexts = data["contexts"]
        if data.get("version") != VERSION or not isinstance(contexts, dict):
            raise ValueError("not a record this code reads")
        return {str(k): v for k, v in contexts.items() if isinstance(v, dict)}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        log.warning("ignoring %s: %s", _path(paths), exc)
        return {}


def _write(paths: Paths, contexts: dict[str, dict[str, object]]) -> None:
    atomic_write_json(_path(paths), {"version": VERSION, "contexts": contexts})


def last_backups(paths: Paths) -> dict[str, LastBackup]:
    """Context name → its newest backup from this machine (contexts never backed up: absent)."""
    out: dict[str, LastBackup] = {}
    for name, rec in _read(paths).items():
        with contextlib.suppress(KeyError, TypeError, ValueError):
            out[name] = LastBackup(name, float(rec["at"]),  # type: ignore[arg-type]
                                   str(rec["snapshot"]), str(rec["target"]))
    return out


def record_backup(paths: Paths, contexts: Iterable[str], snapshot: str, target: str,
                  at: float | None = None) -> None:
    """Note that ``contexts`` are in ``snapshot`` on ``target`` (written atomically). Never
    raises: the backup itself is done and safe whatever happens to this note."""
    when = time.time() if at is None else at
    try:
        with _locked(paths):
            record = _read(paths)
            for name in contexts:
                record[name] = {"at": when, "snapshot": snapshot, "target": target}
            _write(paths, record)
    except (OSError, BlankSlateError) as exc:
        log.warning("could not note the backup in %s: %s", _path(paths), exc)


def forget_backup(paths: Paths, name: str, new_name: str | None = None) -> None:
    """A context was removed (or renamed to ``new_name``): its note goes (or moves)."""
    try:
        with _locked(paths):
            record = _read(paths)
            rec = record.pop(name, None)
            if rec is None:
                return
            if new_name is not None:
                record[new_name] = rec
            _write(paths, record)
    except (OSError, BlankSlateError) as exc:
        log.warning("could not update %s: %s", _path(paths), exc)

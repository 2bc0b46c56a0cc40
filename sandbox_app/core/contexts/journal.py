"""The journal: what a crash may leave behind, and how to clean it up.

Every session writes ``state/sessions/<id>.json`` before it creates anything (its runtime
dir, its overlay, its QEMU), naming all of it. A session that ends normally removes its
entry last. At every start of ``blankslate`` (any command), ``recover()`` finds entries whose
owner process is gone and cleans up: kills the orphan QEMU, securely erases the overlay and
any half-written state, removes the runtime dir.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomli_w

from ..errors import BlankSlateError
from ..storage import (
    Paths,
    atomic_write_bytes,
    atomic_write_json,
    erase_tree,
    fsync_dir,
    private_dir,
    secure_erase,
    validate_name,
)
from .context import files_in_use
from .lock import try_context_lock
from .vault import key_store

log = logging.getLogger(__name__)


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks (field 22 of /proc/PID/stat); None if gone.

    Together with the pid it identifies a process even after the pid is reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass
class SessionRecord:
    """One session's journal entry."""

    id: str
    context: str
    owner_pid: int
    owner_start: int
    runtime_dir: str
    files: list[str] = field(default_factory=list)  # to erase if the session dies
    qemu_pid: int | None = None
    qemu_start: int | None = None
    started_at: float = field(default_factory=time.time)

    def owner_alive(self) -> bool:
        return process_start_time(self.owner_pid) == self.owner_start


class Journal:
    """The session journal in the state dir."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.dir = paths.state / "sessions"

    def _path(self, session_id: str) -> Path:
        return self.dir / f"{session_id}.json"

    def write(self, rec: SessionRecord) -> None:
        private_dir(self.dir)
        atomic_write_json(self._path(rec.id), asdict(rec))

    def remove(self, session_id: str) -> None:
        self._path(session_id).unlink(missing_ok=True)

    def records(self) -> list[SessionRecord]:
        if not self.dir.is_dir():
            return []
        out = []
        for p in sorted(self.dir.glob("*.json")):
            try:
                out.append(SessionRecord(**json.loads(p.read_text())))
            except (OSError, ValueError, TypeError):
                log.warning("dropping unreadable journal entry %s", p.name)
                p.unlink(missing_ok=True)
        return out

    def live_files(self) -> set[str]:
        """Base names of files owned by sessions whose process is still alive, and of the
        temporary files they are being written through (``.NAME.tmp``)."""
        names = {Path(f).name for rec in self.records() if rec.owner_alive() for f in rec.files}
        return names | {f".{n}.tmp" for n in names}

    def recover(self) -> list[str]:
        """Clean up after every dead session; returns their ids."""
        finish_renames(self.paths)  # first: a renamed context's folder is no orphan
        cleaned = []
        for rec in self.records():
            if rec.owner_alive():
                continue
            # A keep (or suspend) that crashed after its commit point: its files now belong to
            # the context.
            try:
                referenced: set[str] | None = files_in_use(self.paths.contexts_data / rec.context)
            except BlankSlateError as exc:  # erase none of its files: they may be its state
                log.warning("%s: not erasing the session's files", exc)
                referenced = None
            cleanup_session(rec, referenced)
            self.remove(rec.id)
            cleaned.append(rec.id)
        if cleaned:
            log.info("cleaned up after %d interrupted session(s)", len(cleaned))
        live = self.live_files()
        if self.paths.contexts_data.is_dir():
            for ctx_dir in self.paths.contexts_data.iterdir():
                try:
                    with try_context_lock(self.paths, ctx_dir.name) as locked:
                        if locked:  # else a keep or a remove is at work in it: next time
                            collect_garbage(ctx_dir, live)
                except BlankSlateError as exc:  # a broken context keeps its files
                    log.info("%s: no clean-up in it", exc)
        self._erase_orphans()
        return cleaned

    def _erase_orphans(self) -> None:
        """Data and keys of contexts without a profile (a remove killed half-way)."""
        profiles = {p.stem for p in self.paths.contexts_config.glob("*.toml")}
        busy = {rec.context for rec in self.records() if rec.owner_alive()}
        data = self.paths.contexts_data
        for ctx_dir in (data.iterdir() if data.is_dir() else ()):
            if ctx_dir.name in profiles or ctx_dir.name in busy or not ctx_dir.is_dir():
                continue
            with contextlib.suppress(BlankSlateError), \
                    try_context_lock(self.paths, ctx_dir.name) as locked:
                if locked:
                    log.info("erasing the data of removed context %s", ctx_dir.name)
                    erase_tree(ctx_dir)
        # Control sockets (session.control) of processes that died without closing them.
        for sock in (self.paths.runtime.glob("control-*.sock")
                     if self.paths.runtime.is_dir() else ()):
            pid = sock.stem.removeprefix("control-")
            if pid.isdigit() and process_start_time(int(pid)) is None:
                sock.unlink(missing_ok=True)
        keys = key_store(self.paths)
        for key_file in keys.directory.glob("*.key.json"):
            name = key_file.name.removesuffix(".key.json")
            if name not in profiles and name not in busy:
                with contextlib.suppress(BlankSlateError, OSError), \
                        try_context_lock(self.paths, name) as locked:
                    if locked:  # else a rename is storing the key under its new name
                        keys.remove(name)


def rename_stage_path(paths: Paths, new: str) -> Path:
    """Where a rename to ``new`` prepares the context's folder (hidden: no context's)."""
    return paths.contexts_data / f".rename-{new}"


def rename_intent_path(paths: Paths, new: str) -> Path:
    """A committed rename to ``new``: ``{"old", "new", "moves"}`` (see ``contexts.rename``)."""
    return paths.contexts_data / f".rename-{new}.json"


def finish_renames(paths: Paths, *, locked: bool = False) -> list[str]:
    """Roll forward every committed rename (one that crashed half-way too): move the
    layers into the prepared folder, erase the rest of the old one, make the folder and the
    profile the new name's, forget the old key. Idempotent at every step. ``locked``: the
    caller holds both contexts' locks; else a rename whose locks are taken is skipped (its
    renamer is at work). Returns the new names."""
    done: list[str] = []
    data = paths.contexts_data
    for intent in sorted(data.glob(".rename-*.json")) if data.is_dir() else ():
        try:
            d = json.loads(intent.read_text())
            old, new = validate_name(str(d["old"]), "context name"), \
                validate_name(str(d["new"]), "context name")
            moves = [Path(str(f)).name for f in d["moves"]]
        except (OSError, ValueError, KeyError, TypeError, BlankSlateError) as exc:
            log.warning("unreadable rename record %s: %s", intent.name, exc)
            continue
        with contextlib.ExitStack() as stack:
            if not locked and not all(stack.enter_context(try_context_lock(paths, n))
                                      for n in (old, new)):
                continue
            _roll_forward(paths, old, new, moves)
            intent.unlink()
            fsync_dir(data)
            done.append(new)
            log.info("context %s renamed to %s", old, new)
    return done


def _roll_forward(paths: Paths, old: str, new: str, moves: list[str]) -> None:
    data, config = paths.contexts_data, paths.contexts_config
    stage, old_dir = rename_stage_path(paths, new), data / old
    if stage.is_dir():
        for f in moves:
            if (old_dir / f).exists():
                os.replace(old_dir / f, stage / f)
        fsync_dir(stage)
        erase_tree(old_dir)  # superseded manifests and states, left-over garbage
        os.rename(stage, data / new)
        fsync_dir(data)
    old_profile = config / f"{old}.toml"
    if old_profile.exists():
        text = old_profile.read_bytes()
        try:
            doc = tomllib.loads(text.decode())
            doc["name"] = new
            text = tomli_w.dumps(doc).encode()
        except (ValueError, UnicodeDecodeError):
            pass  # a corrupt profile moves as it is (the context is listed as broken)
        atomic_write_bytes(config / f"{new}.toml", text)
        old_profile.unlink()
        fsync_dir(config)
    keys = key_store(paths)
    if keys.exists(old):
        keys.remove(old)


def cleanup_session(rec: SessionRecord, referenced: set[str] | None) -> None:
    """Kill the orphan QEMU (if it is still the same process), erase the session's files but
    those its context references (None: its manifest is unreadable, erase none), remove
    its runtime dir."""
    if rec.qemu_pid and process_start_time(rec.qemu_pid) == rec.qemu_start:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.qemu_pid, signal.SIGKILL)
        for _ in range(200):
            if process_start_time(rec.qemu_pid) != rec.qemu_start:
                break
            time.sleep(0.01)
    for name in rec.files:
        if referenced is not None and Path(name).name not in referenced:
            secure_erase(Path(name))
    runtime = Path(rec.runtime_dir) if rec.runtime_dir else None
    if runtime is not None and runtime.is_dir():
        for p in runtime.iterdir():
            if p.is_file() and not p.is_symlink():
                secure_erase(p)
        shutil.rmtree(runtime, ignore_errors=True)


def collect_garbage(context_dir: Path, live: set[str]) -> int:
    """Erase files in the context dir that its manifest does not reference.

    ``live`` names files of sessions still running. Returns bytes overwritten.
    """
    if not context_dir.is_dir():
        return 0
    keep = files_in_use(context_dir) | live
    wiped = 0
    for p in context_dir.iterdir():
        if p.name not in keep and p.is_file():
            wiped += secure_erase(p).wiped_bytes
    return wiped

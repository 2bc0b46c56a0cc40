"""Restore contexts from a backup into this machine's home.

Files are written into ``data/.restore/<snapshot>/`` first, all in one batch (each file renamed
from ``.part`` when complete, so an interrupted restore resumes where it stopped), then moved
into place: the image's snapshot point, the context's folder and key, and last its profile —
the commit point (a context's data without a profile is what crash recovery erases).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contexts import Context, ContextStore, Profile, key_store
from ..errors import ImageError, NotFoundError, UsageError
from ..progress import Progress, no_progress
from ..storage import (
    ContextKey,
    IterReader,
    Paths,
    encrypt_stream,
    fsync_dir,
    private_dir,
    validate_name,
)
from ..vm.guestram import encode_delta
from .files import ChunkFetcher, Entry, Stats, entry_bytes
from .rampages import to_records
from .rebind import rebind
from .repository import Repository
from .target import BackupError, Target

_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class RestoreReport:
    snapshot: str
    contexts: list[str]
    stats: Stats
    seconds: float
    unlock_seconds: float = 0.0  # of ``seconds``: the passphrase's key derivation (scrypt)

    def as_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "contexts": self.contexts,
                "objects_received": self.stats.objects_received,
                "bytes_received": self.stats.bytes_received,
                "seconds": round(self.seconds, 3),
                "unlock_seconds": round(self.unlock_seconds, 3)}


def _safe(rel: str) -> str:
    if not all(_PART.fullmatch(part) for part in rel.split("/")):
        raise BackupError(f"the snapshot names a file '{rel[:60]}' outside its folder")
    return rel


class _Restorer:
    def __init__(self, paths: Paths, repo: Repository, snapshot: str,
                 progress: Progress) -> None:
        self.paths = paths
        self.staging = private_dir(paths.data / ".restore" / snapshot)
        self.progress = progress
        self.fetcher = ChunkFetcher(repo, self._advance)
        self.done = 0
        self.total = 1
        self.phase = ""
        self._last = 0.0
        self._lock = threading.Lock()
        self._todo: list[tuple[Entry, Path]] = []
        self._ram: list[tuple[Entry, Path, str]] = []  # kept RAM deltas: entry, file, key
        self._queued: set[Path] = set()
        self._dirs: list[Path] = []
        self._steps: list[Callable[[], None]] = []
        self._images: set[str] = set()  # images this restore puts in place
        self._points: set[tuple[str, str]] = set()  # (image, point) already seen to

    def _advance(self, n: int) -> None:
        with self._lock:  # the RAM deltas' thread reports too
            self.done += n
        now = time.monotonic()
        if now - self._last > 0.25:
            self._last = now
            self.progress(f"{self.phase} ({self.done >> 20} of {self.total >> 20} MiB)",
                          min(self.done / self.total, 0.99))

    def files(self, entries: list[Entry], into: Path, key: dict[str, Any] | None = None
              ) -> None:
        """Queue ``entries`` to restore under ``into`` (files already complete there are
        kept); ``flush`` writes them. ``key``: the context's (``KeyStore.portable``), for
        its kept RAM deltas stored page by page."""
        for entry in entries:
            dest = into / _safe(str(entry["path"]))
            if dest.exists():
                self._advance(entry_bytes(entry))
            elif dest in self._queued:
                continue
            elif "ram" in entry:
                if not key or "key" not in key:
                    raise BackupError("the snapshot holds a RAM state without its key")
                self._queued.add(dest)
                self._ram.append((entry, dest, str(key["key"])))
            else:
                self._queued.add(dest)
                self._todo.append((entry, dest.with_name(dest.name + ".part")))
        self._dirs.append(into)

    def _write_ram(self, entry: Entry, dest: Path, key_b64: str) -> None:
        """A kept RAM delta from its page groups, encrypted as a keep writes it (atomically;
        the plaintext only ever in memory)."""
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ContextKey(base64.b64decode(key_b64))
        try:
            plain = encode_delta(to_records(self.fetcher.fetch_in_order(entry)))
            encrypt_stream(key, io.BufferedReader(IterReader(plain)), dest,
                           label=base64.b64decode(entry["ram"]["label"]))
        except ImageError as exc:
            raise BackupError(f"a backed-up RAM state is malformed: {exc}") from exc
        finally:
            key.drop()
        os.chmod(dest, int(entry["mode"]) & 0o777)

    def then(self, step: Callable[[], None]) -> None:
        """A step for ``flush`` to take once the files queued before it are written."""
        self._steps.append(step)

    def flush(self) -> None:
        """Write every queued file in one batch (so no file waits for the last chunk of
        another phase), then take the queued steps in order."""
        with ThreadPoolExecutor(2, thread_name_prefix="restore-ram") as pool:
            # RAM deltas are rebuilt (CPU: inflate, deflate, encrypt) while files are written.
            rebuilt = [pool.submit(self._write_ram, *todo) for todo in self._ram]
            try:
                self.fetcher.restore_files(self._todo)
            finally:
                for job in rebuilt:
                    job.result()
        for _entry, part in self._todo:
            part.rename(part.with_name(part.name.removesuffix(".part")))
        self._ram = []
        for folder in dict.fromkeys(self._dirs):
            if folder.is_dir():
                fsync_dir(folder)
        steps, self._todo, self._dirs, self._steps = self._steps, [], [], []
        for step in steps:
            step()

    def read(self, entries: list[Entry], rel: str) -> bytes:
        """A small file of the snapshot, in memory."""
        for entry in entries:
            if entry["path"] == rel:
                return b"".join(self.fetcher.fetch(i) for _o, chunks in entry["extents"]
                                for i, _n in chunks)
        return b""

    def image_point(self, image: str, spec: dict[str, Any], point: str) -> None:
        """Queue snapshot point ``point`` of ``image`` to be put in place (with the image,
        when this machine has none; as a retired point carrying its base files, when this
        machine has another build of the image)."""
        validate_name(image, "image name")
        _safe(point)
        if (image, point) in self._points:
            return
        self._points.add((image, point))
        img_dir = self.paths.images / image
        backup_manifest = self.read(spec["files"], "manifest.json")
        if image not in self._images and not (img_dir / "manifest.json").exists():
            if img_dir.exists():
                raise BackupError(f"image folder {img_dir} is incomplete: remove it and retry")
            self._images.add(image)
            image_stage = self.staging / "images" / image
            self.files(spec["files"], image_stage)

            def move_image() -> None:
                private_dir(self.paths.images)
                image_stage.rename(img_dir)
                fsync_dir(self.paths.images)
            self.then(move_image)
        point_dir = img_dir / "snapshots" / point
        entries = spec["points"][point]
        if point_dir.exists():
            if (point_dir / "snapshot.json").read_bytes() != self.read(entries, "snapshot.json"):
                raise BackupError(
                    f"image '{image}' here has a different snapshot point named {point}: "
                    f"restore into a home without the '{image}' image")
            return
        stage = self.staging / "points" / image / point
        self.files(entries, stage)
        same_build = image in self._images or (
            json.loads((img_dir / "manifest.json").read_text()).get("sha256")
            == json.loads(backup_manifest or b"{}").get("sha256"))
        if not same_build and not (stage / "base" / "root.qcow2").exists():
            # Another build of the image here: the point carries the base it was made from.
            base = [e for e in spec["files"] if e["path"] in ("vmlinuz", "initrd.img",
                                                              "root.qcow2")]
            self.files(base, private_dir(stage / "base"))

        def move_point() -> None:
            private_dir(img_dir / "snapshots")
            stage.rename(point_dir)
            fsync_dir(point_dir.parent)
        self.then(move_point)


def restore(paths: Paths, target: Target, passphrase: str, names: list[str] | None = None, *,
            snapshot: str | None = None, as_name: str | None = None,
            progress: Progress = no_progress) -> RestoreReport:
    """Restore contexts (all of the snapshot's when ``names`` is empty) from ``target``'s
    snapshot ``snapshot`` (when None: the newest holding every one of ``names``) into this
    home."""
    t0 = time.monotonic()
    progress(f"opening {target.description}", None)
    t_unlock = time.monotonic()
    repo = Repository.open(target, passphrase)
    unlock_s = time.monotonic() - t_unlock
    name = repo.resolve(snapshot)
    index = repo.read_snapshot(name)
    if snapshot is None and names:  # the newest snapshot that holds them all
        for candidate in reversed(repo.snapshot_names()):
            found = repo.read_snapshot(candidate)
            if all(n in found.get("contexts", {}) for n in names):
                name, index = candidate, found
                break
    available = index.get("contexts", {})
    chosen = list(names or sorted(available))
    for n in chosen:
        if n not in available:
            raise NotFoundError(f"snapshot {name} holds no context '{n}' "
                                f"(it holds: {', '.join(sorted(available)) or 'none'})")
    if as_name is not None:
        if len(chosen) != 1:
            raise UsageError("--as renames one context: name exactly one")
        validate_name(as_name, "context name")
    store = ContextStore(paths)
    targets = {n: as_name or n for n in chosen}
    for new in targets.values():
        _make_room(paths, store, new)
    run = _Restorer(paths, repo, name, progress)
    try:
        images = index.get("images", {})
        run.total = max(1, sum(entry_bytes(e) for n in chosen
                               for e in available[n]["files"]) + sum(
            entry_bytes(e) for n in chosen for p in available[n]["points"]
            for e in images[available[n]["image"]]["points"].get(p, [])))
        for n in chosen:
            spec = available[n]
            img = images.get(spec["image"])
            points = spec["points"] or sorted(img["points"] if img else [])
            for point in points:
                if img is None or point not in img["points"]:
                    raise BackupError(f"snapshot {name} lacks the snapshot point of '{n}'")
                run.image_point(spec["image"], img, point)
            run.files(spec["files"], run.staging / "contexts" / n, spec.get("key"))
        run.phase = "restoring"
        run.flush()  # snapshot points in place, contexts staged
        for n in chosen:
            _commit_context(paths, store, available[n], run.staging / "contexts" / n,
                            old=n, new=targets[n])
    finally:
        run.fetcher.close()
    shutil.rmtree(run.staging, ignore_errors=True)
    progress("restore done", 1.0)
    return RestoreReport(name, [targets[n] for n in chosen], run.fetcher.stats,
                         time.monotonic() - t0, unlock_s)


def holds_data(ctx: Context) -> bool:
    """Whether a context holds anything of its user's: kept layers, a suspended session, or
    a persistent folder a session has used. The app makes each context's folder ahead of its
    first session (``session.volume.prepare_volume``): the volume file is written before its
    key file, and a session that mounts it writes to it — so a volume no newer than its key
    has never been attached and holds nothing but an empty file system."""
    if ctx.manifest().layers or ctx.suspended() is not None:
        return True
    try:
        volume = ctx.volume_path.stat().st_mtime_ns
    except FileNotFoundError:
        return False
    try:
        return volume > ctx.volume_key_path.stat().st_mtime_ns
    except FileNotFoundError:
        return True  # a volume without its key: not ours to judge, keep it


def _make_room(paths: Paths, store: ContextStore, name: str) -> None:
    """A context of that name here is replaced only if it holds nothing yet (``holds_data``):
    the defaults a fresh install made, even once the app has prepared their folders."""
    try:
        ctx = store.get(name)
    except NotFoundError:
        return
    if holds_data(ctx):
        raise UsageError(f"context '{name}' already exists here and holds data: restore "
                         f"with --as NEWNAME, or remove it first")
    store.remove(name)
    keys = key_store(paths)
    if keys.exists(name):
        keys.remove(name)


def _commit_context(paths: Paths, store: ContextStore, spec: dict[str, Any], stage: Path, *,
                    old: str, new: str) -> None:
    profile = Profile.from_toml(new, str(spec["profile"]).encode())
    keys = key_store(paths)
    key = spec.get("key")
    if old != new:
        if key is not None and "key" not in key:
            raise UsageError(f"context '{old}' has a passphrase, which binds its key to its "
                             "name: restore it under its own name")
        rebind(stage, profile.image, old, new, key.get("key") if key else None)
    private_dir(stage)
    data = paths.contexts_data / new
    if data.exists():  # an empty folder of a context removed above
        shutil.rmtree(data)
    if key is not None:
        keys.adopt(new, key)
    private_dir(paths.contexts_data)
    stage.rename(data)
    fsync_dir(paths.contexts_data)
    private_dir(paths.contexts_config)
    store.save(profile)  # the commit point
    Context(paths, profile).manifest()  # reads back as a sound context

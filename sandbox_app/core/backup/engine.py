"""Back up contexts: their profile, every file of their data folder, their key (inside the
encryption) and every snapshot point they depend on; list and check what a target holds."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contexts import Context, ContextStore, context_lock, files_in_use, key_store
from ..errors import ImageError, NotFoundError
from ..images import Image, ImageStore, SnapshotPoint
from ..progress import Progress, no_progress
from ..storage import ContextKey, Paths, decrypt_chunks
from .files import ChunkSender, Entry, Stats, entry_bytes, entry_ids, file_stat
from .rampages import to_groups
from .record import record_backup
from .repository import Repository
from .target import BackupError, MissingObject, Target

INDEX_VERSION = 1
IMAGE_FILES = ("recipe.json", "manifest.json", "vmlinuz", "initrd.img", "root.qcow2")


@dataclass
class BackupReport:
    """What one backup did (``--json`` prints it)."""

    snapshot: str
    contexts: list[str]
    stats: Stats
    seconds: float
    unlock_seconds: float = 0.0  # of ``seconds``: the passphrase's key derivation (scrypt)

    def as_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "contexts": self.contexts,
                "objects_sent": self.stats.objects_sent, "bytes_sent": self.stats.bytes_sent,
                "bytes_skipped": self.stats.bytes_skipped, "bytes_read": self.stats.bytes_read,
                "seconds": round(self.seconds, 3),
                "unlock_seconds": round(self.unlock_seconds, 3)}


def open_or_create(target: Target, passphrase: str) -> Repository:
    """The repository on ``target``; a new one when the target holds none yet."""
    if Repository.initialized(target):
        return Repository.open(target, passphrase)
    return Repository.create(target, passphrase)


def backed_up_files(context_dir: Path) -> list[Path]:
    """Every file of a context's folder that is its data: what its manifests reference,
    its persistent folder, and any other file but a live session's overlay and temporaries
    (so files that later versions add are backed up without a change here)."""
    if not context_dir.is_dir():
        return []
    in_use = files_in_use(context_dir)
    return sorted(p for p in context_dir.iterdir()
                  if p.is_file() and not p.is_symlink() and not p.name.startswith(".")
                  and not p.name.endswith(".tmp")
                  and (p.name in in_use or not p.name.startswith("session-")))


def points_needed(paths: Paths, ctx: Context, image: Image) -> list[SnapshotPoint]:
    """The snapshot points a context starts from: the one its kept (and suspended) layers
    sit on, or — a context never kept — the image's current one."""
    names = {m.snapshot for m in (ctx.manifest(), ctx.suspended()) if m and m.snapshot}
    if not names:
        store = ImageStore(paths)
        point = store.ready_snapshot(image, store.accel_for(image), ctx.profile.memory_mib)
        return [point] if point is not None else []
    points = [image.snapshot_dir(n) for n in sorted(names)]
    for point in points:
        if not point.directory.is_dir():
            raise BackupError(f"context '{ctx.name}': its snapshot point {point.directory.name} "
                              "is missing")
    return points


def _tree(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".tmp"))


class _Run:
    """One backup in progress."""

    def __init__(self, paths: Paths, repo: Repository, progress: Progress) -> None:
        self.paths = paths
        self.repo = repo
        self.progress = progress
        self.previous: dict[tuple[int, ...], Entry] = {}
        self.done = 0
        self.total = 1
        self.phase = ""
        self.sender = ChunkSender(repo, self._advance)
        self._last = 0.0

    def _advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last > 0.25:
            self._last = now
            self.progress(f"{self.phase} ({self.done >> 20} of ~{self.total >> 20} MiB)",
                          min(self.done / self.total, 0.99))

    def load_previous(self) -> None:
        """Entries of the newest snapshot, by file identity: unchanged files are not read."""
        names = self.repo.snapshot_names()
        if not names:
            return
        index = self.repo.read_snapshot(names[-1])
        for c in index.get("contexts", {}).values():
            for e in c.get("files", []):
                self.previous[tuple(e["stat"])] = e
        for img in index.get("images", {}).values():
            for e in img.get("files", []):
                self.previous[tuple(e["stat"])] = e
            for entries in img.get("points", {}).values():
                for e in entries:
                    self.previous[tuple(e["stat"])] = e

    def _previous(self, path: Path) -> Entry | None:
        """The newest snapshot's entry of this very file (same device, inode, size, mtime)."""
        return self.previous.get(tuple(file_stat(path)))

    def send(self, path: Path, rel: str, *, fine: bool = False) -> Entry:
        return self.sender.send_file(path, rel, self._previous(path), fine=fine)

    def send_ram(self, path: Path, key: ContextKey, label: bytes) -> Entry:
        """A kept RAM delta as page groups (``rampages``); a delta that does not decrypt or
        parse (corrupt: a session will refuse it too) as the file it is."""
        extra = {"ram": {"label": base64.b64encode(label).decode()}}
        try:
            return self.sender.send_groups(
                path, path.name, lambda: to_groups(decrypt_chunks(key, path, label)), extra,
                self._previous(path))
        except ImageError:
            return self.send(path, path.name)


def backup(paths: Paths, target: Target, passphrase: str, names: Iterable[str] = (),
           progress: Progress = no_progress) -> BackupReport:
    """Back up ``names`` (every context when empty) to ``target``. The snapshot index is the
    last object written: a backup cut short leaves chunks (which the next one reuses) but no
    snapshot naming anything missing."""
    t0 = time.monotonic()
    store = ContextStore(paths)
    chosen = [store.get(n) for n in names] if names else store.list()
    if not chosen:
        raise NotFoundError("no context to back up")
    images = ImageStore(paths)
    progress(f"opening {target.description}", None)
    t_unlock = time.monotonic()
    repo = open_or_create(target, passphrase)
    unlock_s = time.monotonic() - t_unlock
    run = _Run(paths, repo, progress)
    try:
        run.load_previous()
        plan: dict[str, tuple[Image, list[SnapshotPoint]]] = {}
        total = 0
        for ctx in chosen:
            image = images.get(ctx.profile.image)
            points = points_needed(paths, ctx, image)
            have = plan.setdefault(image.name, (image, []))[1]
            have += [p for p in points if p.directory not in {h.directory for h in have}]
            total += sum(p.stat().st_blocks * 512 for p in backed_up_files(ctx.data_dir))
        for image, points in plan.values():
            total += sum(image.directory.joinpath(f).stat().st_blocks * 512
                         for f in IMAGE_FILES if image.directory.joinpath(f).exists())
            total += sum(p.stat().st_blocks * 512 for pt in points for p in _tree(pt.directory))
        run.total = max(total, 1)
        index: dict[str, Any] = {"version": INDEX_VERSION, "created_at": time.time(),
                                 "contexts": {}, "images": {}}
        for image, points in plan.values():
            run.phase = f"image {image.name}"
            index["images"][image.name] = {
                "files": [run.send(image.directory / f, f) for f in IMAGE_FILES
                          if (image.directory / f).exists()],
                "points": {pt.directory.name: [run.send(p, p.relative_to(pt.directory)
                                                        .as_posix())
                                               for p in _tree(pt.directory)]
                           for pt in points},
            }
        for ctx in chosen:
            run.phase = f"context {ctx.name}"
            index["contexts"][ctx.name] = _backup_context(paths, run, ctx)
        progress("writing the snapshot index", 0.99)
        name = repo.write_snapshot(index)
    finally:
        run.sender.close()
    record_backup(paths, [c.name for c in chosen], name, target.description)
    progress("backup done", 1.0)
    return BackupReport(name, [c.name for c in chosen], run.sender.stats,
                        time.monotonic() - t0, unlock_s)


def _backup_context(paths: Paths, run: _Run, ctx: Context) -> dict[str, Any]:
    keys = key_store(paths)
    # A keep (and its compaction) takes this lock: no file changes under us while we read.
    with context_lock(paths, ctx.name):
        manifest = ctx.manifest()
        profile = (paths.contexts_config / f"{ctx.name}.toml").read_text()
        points = sorted({m.snapshot for m in (manifest, ctx.suspended()) if m and m.snapshot})
        key = keys.portable(ctx.name) if keys.exists(ctx.name) else None
        # Kept RAM deltas go page by page when the key is at hand (not a passphrase's).
        ram = {m.state.ram: m.state.label(ctx.name, m.generation, m.snapshot, m.state.ram)
               for m in (manifest, ctx.suspended())
               if m is not None and m.state is not None and m.state.ram is not None}
        # Files changed in place are cut finer: the persistent volume, and the kept layers
        # (a compaction commits the newer ones into the bottom one, in place).
        in_place = {ctx.volume_path.name} | {layer.file for layer in manifest.layers}
        raw = ContextKey(base64.b64decode(key["key"])) if key and "key" in key else None
        try:
            files = [run.send_ram(p, raw, ram[p.name]) if raw and p.name in ram
                     else run.send(p, p.name, fine=p.name in in_place)
                     for p in backed_up_files(ctx.data_dir)]
        finally:
            if raw is not None:
                raw.drop()
    return {"profile": profile, "image": ctx.profile.image, "points": points,
            "kept_at": manifest.kept_at, "key": key, "files": files}


@dataclass
class CheckReport:
    """What ``check`` found."""

    snapshots: int = 0
    objects: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)


def check(target: Target, passphrase: str, progress: Progress = no_progress) -> CheckReport:
    """Read every object back and verify it (decrypts, and hashes to its name), and that
    every chunk each snapshot names is there."""
    repo = Repository.open(target, passphrase)
    report = CheckReport()
    stored = repo.known_chunks()
    needed: set[str] = set()
    for name in repo.snapshot_names():
        try:
            index = repo.read_snapshot(name)
        except BackupError as exc:
            report.problems.append(str(exc))
            continue
        report.snapshots += 1
        for entry in _entries(index):
            needed.update(entry_ids(entry))
    for missing in sorted(needed - set(stored)):
        report.problems.append(f"object data/{missing[:2]}/{missing} is missing "
                               "(a snapshot needs it)")
    total = max(sum(stored.values()), 1)
    done = 0
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    def verify(object_id: str) -> str | None:
        try:
            repo.get_chunk(object_id)
        except MissingObject as exc:
            return str(exc)
        except BackupError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(8, thread_name_prefix="backup-check") as pool:
        for object_id, problem in zip(stored, pool.map(verify, stored), strict=True):
            done += stored[object_id]
            report.objects += 1
            report.bytes += stored[object_id]
            if problem:
                report.problems.append(problem)
            progress(f"checked {report.objects} of {len(stored)} objects", done / total)
    return report


def _entries(index: dict[str, Any]) -> list[Entry]:
    out: list[Entry] = []
    for c in index.get("contexts", {}).values():
        out += c.get("files", [])
    for img in index.get("images", {}).values():
        out += img.get("files", [])
        for entries in img.get("points", {}).values():
            out += entries
    return out


def snapshot_summary(repo: Repository) -> list[dict[str, Any]]:
    """Every snapshot, oldest first: name, time, contexts (with kept time and size)."""
    out = []
    for name in repo.snapshot_names():
        index = repo.read_snapshot(name)
        out.append({
            "snapshot": name, "created_at": index.get("created_at"),
            "contexts": {n: {"image": c.get("image"), "kept_at": c.get("kept_at"),
                             "bytes": sum(entry_bytes(e) for e in c.get("files", []))}
                         for n, c in index.get("contexts", {}).items()},
            "images": {n: sorted(img.get("points", {}))
                       for n, img in index.get("images", {}).items()},
        })
    return out

"""The backup jobs: probe a target, back up, list a target's snapshots, restore, and save
the backup settings. One class per job, core calls only (``core.backup``); the blocking
ones run in a thread (``ThreadedJob``).
"""

from __future__ import annotations

import threading
from typing import Any

from PySide6.QtCore import QTimer

from ..core.backup import (
    BackupReport,
    CredentialStore,
    Repository,
    RestoreReport,
    backup,
    restore,
    snapshot_summary,
)
from ..core.errors import AuthError, Cancelled
from ..core.session import AppSettings, ContextRunner
from ..core.session.settings import save_backup_settings
from ..core.storage import Paths
from .asyncbridge import CANCELLED, Job, in_thread
from .backup_dialogs import BackupSettingsChange, BackupSource, RestoreChoice


class ThreadedJob(Job):
    """A job whose core work blocks (backup, restore: files and network), run in a thread.

    The work's progress callback (``thread_progress``, called from its threads) only stores
    the latest report; a timer in the GUI thread forwards it — no Qt call is ever made from
    a worker thread. Cancel takes effect at the work's next progress report (the core then
    stops cleanly: a backup leaves chunks its next run reuses, a restore its staging folder
    to resume from).
    """

    cancellable = True
    POLL_MS = 100

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._stop = threading.Event()
        self._latest: tuple[str, float | None] | None = None
        self.wrong_passphrase = False  # the app forgets the passphrase it remembered
        self._timer = QTimer(self)
        self._timer.setInterval(self.POLL_MS)
        self._timer.timeout.connect(self._forward)

    def _forward(self) -> None:
        latest, self._latest = self._latest, None
        if latest is not None:
            self.report(*latest)

    def thread_progress(self, phase: str, fraction: float | None) -> None:
        """A core ``Progress`` for the worker threads (a tuple stored: atomic)."""
        if self._stop.is_set():
            raise Cancelled(CANCELLED)
        self._latest = (phase, fraction)

    def cancel(self) -> bool:
        if self.done() or self._stop.is_set():
            return False
        self._stop.set()
        return True

    async def blocking(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a thread, its progress forwarded; notes a wrong passphrase."""
        self._timer.start()
        try:
            return await in_thread(fn, *args)
        except AuthError:
            self.wrong_passphrase = True
            raise
        finally:
            self._timer.stop()
            self._forward()


class ProbeBackupTargetJob(Job):
    """Whether the target holds a backup already (a first one asks its passphrase twice)."""

    def __init__(self, source: BackupSource, credentials: CredentialStore) -> None:
        super().__init__("probe-backup-target")
        self.source = source
        self.credentials = credentials

    async def work(self) -> bool:
        return await in_thread(
            lambda: Repository.initialized(self.source.open(self.credentials)))


class BackupJob(ThreadedJob):
    """Back up contexts (every one when ``names`` is empty) to the source's target."""

    def __init__(self, paths: Paths, source: BackupSource, credentials: CredentialStore,
                 passphrase: str, names: list[str]) -> None:
        super().__init__("backup")
        self.paths = paths
        self.source = source
        self.credentials = credentials
        self.passphrase = passphrase
        self.names = names

    async def work(self) -> BackupReport:
        def run() -> BackupReport:
            target = self.source.open(self.credentials)
            return backup(self.paths, target, self.passphrase, self.names,
                          self.thread_progress)

        report: BackupReport = await self.blocking(run)
        return report


class ListBackupsJob(ThreadedJob):
    """The snapshots a target holds (``core.backup.snapshot_summary``, oldest first)."""

    def __init__(self, source: BackupSource, credentials: CredentialStore,
                 passphrase: str) -> None:
        super().__init__("list-backups")
        self.source = source
        self.credentials = credentials
        self.passphrase = passphrase

    async def work(self) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            self.thread_progress(f"opening {self.source.target}", None)
            return snapshot_summary(Repository.open(self.source.open(self.credentials),
                                                    self.passphrase))

        snapshots: list[dict[str, Any]] = await self.blocking(run)
        return snapshots


class RestoreJob(ThreadedJob):
    """Restore contexts from a snapshot into this home. The app's runners of contexts it
    replaces (empty ones: a fresh install's) are closed first: their prepared overlays and
    standby QEMU sit in the folders the restore replaces."""

    def __init__(self, paths: Paths, choice: RestoreChoice, credentials: CredentialStore,
                 runners: list[ContextRunner]) -> None:
        super().__init__("restore")
        self.paths = paths
        self.choice = choice
        self.credentials = credentials
        self.runners = runners

    async def work(self) -> RestoreReport:
        for runner in self.runners:
            await runner.close()
        c = self.choice

        def run() -> RestoreReport:
            return restore(self.paths, c.source.open(self.credentials), c.passphrase,
                           c.contexts, snapshot=c.snapshot, as_name=c.as_name,
                           progress=self.thread_progress)

        report: RestoreReport = await self.blocking(run)
        return report


class SaveBackupSettingsJob(Job):
    """Store Backup settings…: the target and endpoint in app.toml, typed S3 credentials in
    the OS keyring (never in a file)."""

    def __init__(self, paths: Paths, change: BackupSettingsChange,
                 credentials: CredentialStore) -> None:
        super().__init__("backup-settings")
        self.paths = paths
        self.change = change
        self.credentials = credentials

    async def work(self) -> AppSettings:
        c = self.change
        if c.credentials is not None:
            await in_thread(self.credentials.save, c.target, c.endpoint, c.credentials)
        return await in_thread(save_backup_settings, self.paths, c.target, c.endpoint)

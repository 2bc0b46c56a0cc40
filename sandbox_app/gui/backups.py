"""Carries out the backup requests (part of the app side): Back up now, Backup settings…
and Restore from backup….

The views only emit ``AppSignals.backup_requested`` / ``backup_settings_requested`` /
``restore_requested``; this opens the dialogs, runs the jobs (``backup_jobs``) with progress,
and tells the tray to notify when a backup ends or fails. The backup passphrase is asked
when backing up (twice for a target's first backup) and remembered in memory for this run
of the app only; S3 credentials live in the OS keyring (``core.backup.credentials``).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import Protocol

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QDialog

from ..core.backup import BackupReport, CredentialStore, RestoreReport
from ..core.session import AppSettings, ContextRunner, RunState
from ..core.storage import Paths
from .asyncbridge import CANCELLED, Job, JobRunner
from .backup_dialogs import (
    BackupPassphraseDialog,
    BackupSettingsChange,
    BackupSettingsDialog,
    BackupSource,
    RestoreChoice,
    RestoreDialog,
)
from .backup_jobs import (
    BackupJob,
    ListBackupsJob,
    ProbeBackupTargetJob,
    RestoreJob,
    SaveBackupSettingsJob,
)
from .format import human_bytes
from .signals import AppSignals


class BackupHost(Protocol):
    """What ``Backups`` uses of the controller (``controller.App``, which owns it)."""

    signals: AppSignals
    paths: Paths
    jobs: JobRunner
    runners: dict[str, ContextRunner]
    quitting: bool

    def submit(self, job: Job, progress_title: str | None = None, *,
               quiet: bool = False) -> Job:
        """Run ``job`` (with a title: a progress dialog; unless quiet, errors as dialogs)."""
        ...

    def state(self, name: str) -> RunState: ...

    def runner(self, name: str) -> ContextRunner: ...


class Backups(QObject):
    """Back up now, Backup settings… and Restore from backup…."""

    def __init__(self, app: BackupHost, credentials: CredentialStore | None = None) -> None:
        super().__init__()
        self.app = app
        self.credentials = credentials or CredentialStore.from_env()
        self._passphrases: dict[str, str] = {}  # BackupSource.key → passphrase, this run only
        # The dialog of each kind opened last (tests answer them like a user).
        self.settings_dialog: BackupSettingsDialog | None = None
        self.passphrase_dialog: BackupPassphraseDialog | None = None
        self.restore_dialog: RestoreDialog | None = None
        s = app.signals
        s.backup_requested.connect(self.back_up)
        s.backup_settings_requested.connect(self.open_settings)
        s.restore_requested.connect(self.open_restore)

    def _settings(self) -> AppSettings:
        return AppSettings.load(self.app.paths)

    def _has_stored_credentials(self, settings: AppSettings) -> bool:
        return settings.backup_target.startswith("s3://") and self.credentials.load(
            settings.backup_target, settings.backup_s3_endpoint) is not None

    def _show(self, dialog: QDialog, attr: str) -> None:
        """Open ``dialog`` (non-blocking) as ``self.<attr>`` until it closes."""
        setattr(self, attr, dialog)

        def closed(_result: int) -> None:
            if getattr(self, attr) is dialog:
                setattr(self, attr, None)
            dialog.deleteLater()

        dialog.finished.connect(closed)
        dialog.open()

    def _notify_failure(self, title: str, message: str) -> None:
        if message != CANCELLED and not self.app.quitting:
            self.app.signals.notify.emit(title, message)

    # ------------------------------------------------------------------ settings

    def open_settings(self, then: Callable[[], object] | None = None,
                      note: str = "") -> BackupSettingsDialog:
        """Backup settings…; on OK they are stored (then ``then`` runs)."""
        settings = self._settings()
        dialog = BackupSettingsDialog(
            settings, stored_credentials=self._has_stored_credentials(settings),
            keyring=self.credentials.available(), note=note)
        dialog.accepted.connect(lambda: self.save_settings(dialog.change(), then))
        self._show(dialog, "settings_dialog")
        return dialog

    def save_settings(self, change: BackupSettingsChange,
                      then: Callable[[], object] | None = None) -> Job:
        job = SaveBackupSettingsJob(self.app.paths, change, self.credentials)
        if then is not None:
            job.finished.connect(lambda _s: then())
        return self.app.submit(job)

    # ------------------------------------------------------------------ back up now

    def back_up(self, names: list[str]) -> Job | BackupSettingsDialog:
        """Back up ``names`` (every context when empty) to the configured target: its
        passphrase is asked unless remembered; without a target, Backup settings… first."""
        settings = self._settings()
        if not settings.backup_target:
            return self.open_settings(then=lambda: self.back_up(names),
                                      note="Choose where backups go first.")
        source = BackupSource(settings.backup_target, settings.backup_s3_endpoint)
        known = self._passphrases.get(source.key)
        if known is not None:
            return self._run_backup(source, known, names)
        probe = ProbeBackupTargetJob(source, self.credentials)
        probe.finished.connect(
            lambda initialized: self._ask_passphrase(source, names, new=not initialized))
        probe.failed.connect(lambda message: self._notify_failure("Backup failed", message))
        return self.app.submit(probe)

    def _ask_passphrase(self, source: BackupSource, names: list[str], *,
                        new: bool) -> BackupPassphraseDialog:
        dialog = BackupPassphraseDialog(source.target, new=new)
        dialog.accepted.connect(
            lambda: self._run_backup(source, dialog.passphrase.text(), names))
        self._show(dialog, "passphrase_dialog")
        return dialog

    def _run_backup(self, source: BackupSource, passphrase: str, names: list[str]) -> Job:
        job = BackupJob(self.app.paths, source, self.credentials, passphrase, names)
        job.finished.connect(lambda report: self._backed_up(source, passphrase, report))
        job.failed.connect(lambda message: self._backup_failed(source, job, message))
        what = ", ".join(f"“{n}”" for n in names) if names else "every context"
        return self.app.submit(job, f"Backing up {what} to {source.target}…")

    def _backed_up(self, source: BackupSource, passphrase: str, report: BackupReport) -> None:
        self._passphrases[source.key] = passphrase
        self.app.signals.notify.emit(
            "Backup done", f"{', '.join(report.contexts)} backed up to {source.target} "
                           f"({human_bytes(report.stats.bytes_sent)} sent).")
        self.app.signals.changed.emit()

    def _backup_failed(self, source: BackupSource, job: BackupJob, message: str) -> None:
        if job.wrong_passphrase:
            self._passphrases.pop(source.key, None)
        self._notify_failure("Backup failed", message)

    # ------------------------------------------------------------------ restore

    def open_restore(self) -> RestoreDialog:
        """Restore from backup…: the dialog asks where and the passphrase, then lists the
        snapshots; the chosen contexts are restored with progress."""
        settings = self._settings()
        dialog = RestoreDialog(settings,
                               stored_credentials=self._has_stored_credentials(settings),
                               keyring=self.credentials.available())
        dialog.find_requested.connect(
            lambda source, passphrase: self._find(dialog, source, passphrase))
        dialog.restore_requested.connect(lambda choice: self._restore(dialog, choice))
        self._show(dialog, "restore_dialog")
        return dialog

    def _find(self, dialog: RestoreDialog, source: BackupSource, passphrase: str) -> Job:
        job = ListBackupsJob(source, self.credentials, passphrase)
        job.finished.connect(dialog.show_snapshots)
        job.failed.connect(dialog.show_error)  # in the dialog, one line
        return self.app.submit(job, quiet=True)

    def _restore(self, dialog: RestoreDialog, choice: RestoreChoice) -> Job | None:
        busy = [n for n in choice.targets if self.app.state(n) is not RunState.STOPPED]
        if busy:
            dialog.show_error(f"“{busy[0]}” has a running session: stop it first")
            return None
        runners = [self.app.runners[n] for n in choice.targets if n in self.app.runners]
        job = RestoreJob(self.app.paths, choice, self.credentials, runners)
        job.finished.connect(lambda report: self._restored(choice, report))
        job.finished.connect(dialog.accept)
        job.failed.connect(dialog.show_error)
        job.failed.connect(lambda message: self._notify_failure("Restore failed", message))
        return self.app.submit(job, "Restoring from backup…", quiet=True)

    def _restored(self, choice: RestoreChoice, report: RestoreReport) -> None:
        source = choice.source
        self._passphrases[source.key] = choice.passphrase
        if not self._settings().backup_target:  # back up where this machine restored from
            credentials = source.credentials if self.credentials.available() else None
            self.save_settings(BackupSettingsChange(source.target, source.endpoint,
                                                    credentials))
        for name in report.contexts:
            self.app.runner(name).prepare_spare_soon()
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(
            _snapshot_time(report.snapshot)))
        self.app.signals.notify.emit(
            "Restore done", f"{', '.join(report.contexts)} restored from the backup of {when}.")
        self.app.signals.changed.emit()


def _snapshot_time(name: str) -> float:
    """A snapshot's name starts with its UTC time (``YYYYmmddHHMMSS``)."""
    try:
        return float(calendar.timegm(time.strptime(name[:14], "%Y%m%d%H%M%S")))
    except ValueError:
        return time.time()

"""The backup dialogs: Backup settings…, the backup passphrase, and Restore from backup….

Views only: they check what was typed and hand it over as records (``BackupSource``,
``BackupSettingsChange``, ``RestoreChoice``); the app side (``backups.Backups``) stores the
settings, runs the jobs and tells the Restore dialog what it found. Secrets typed here go to
the OS keyring (credentials) or stay in memory (the passphrase), never into a file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QWidget,
)

from ..core.backup import (
    CredentialStore,
    S3Credentials,
    Target,
    check_endpoint,
    check_target_spec,
    open_target,
)
from ..core.errors import BlankSlateError, UsageError
from ..core.session import AppSettings
from .asyncbridge import CANCELLED
from .dialogs import choose_directory
from .format import human_bytes
from .widgets import add_ok_cancel


@dataclass(frozen=True)
class BackupSource:
    """Where a backup is (or goes): a folder or ``s3://BUCKET/PREFIX``, with the S3 endpoint
    and, when typed in a dialog, credentials (else the keyring's, else AWS's usual ones)."""

    target: str
    endpoint: str = ""
    credentials: S3Credentials | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """What identifies the backup (the passphrase remembered for it is keyed by it)."""
        return f"{self.target}\n{self.endpoint}" if self.is_s3 else self.target

    @property
    def is_s3(self) -> bool:
        return self.target.startswith("s3://")

    def open(self, store: CredentialStore) -> Target:
        """The target (blocking: S3 imports boto3, the keyring may ask the desktop)."""
        credentials = self.credentials
        if credentials is None and self.is_s3:
            credentials = store.load(self.target, self.endpoint)
        return open_target(self.target, self.endpoint or None, credentials)


@dataclass(frozen=True)
class BackupSettingsChange:
    """What Backup settings… asks for; ``credentials`` None: the stored ones stay."""

    target: str
    endpoint: str
    credentials: S3Credentials | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RestoreChoice:
    """What Restore from backup… asks for."""

    source: BackupSource
    passphrase: str = field(repr=False)
    snapshot: str
    contexts: list[str]
    as_name: str | None = None  # restore the one context under this name

    @property
    def targets(self) -> list[str]:
        """The names the restored contexts get here."""
        return [self.as_name] if self.as_name else list(self.contexts)


class TargetFields:
    """The target, endpoint and S3 key rows of a form (the S3 rows only matter for s3://)."""

    def __init__(self, form: QFormLayout, parent: QWidget, target: str, endpoint: str, *,
                 stored_credentials: bool, keyring: bool) -> None:
        self.parent = parent
        self.keyring = keyring
        self.target = QLineEdit(target)
        self.target.setObjectName("backupTarget")
        self.target.setPlaceholderText("/media/usb/blankslate or s3://bucket/prefix")
        browse = QPushButton("Folder…")
        browse.setObjectName("backupBrowse")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.target, 1)
        row.addWidget(browse)
        self.endpoint = QLineEdit(endpoint)
        self.endpoint.setObjectName("backupEndpoint")
        self.endpoint.setPlaceholderText("S3 only: https://… (empty: AWS)")
        self.key_id = QLineEdit()
        self.key_id.setObjectName("backupKeyId")
        self.secret = QLineEdit()
        self.secret.setObjectName("backupSecret")
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        hint = ("stored in the keyring: type both to replace" if stored_credentials
                else "kept in the OS keyring" if keyring
                else "no OS keyring: use AWS_ACCESS_KEY_ID / ~/.aws")
        for edit in (self.key_id, self.secret):
            edit.setPlaceholderText(hint)
        form.addRow("Back up to", row)
        form.addRow("S3 endpoint", self.endpoint)
        form.addRow("S3 access key id", self.key_id)
        form.addRow("S3 secret key", self.secret)
        self.target.textChanged.connect(self._s3_rows)
        self._s3_rows()

    def _browse(self) -> None:
        start = self.target.text().strip()
        choose_directory(self.parent, "Back up into this folder",
                         _folder_or_home(start), lambda p: self.target.setText(str(p)))

    def _s3_rows(self) -> None:
        s3 = self.target.text().strip().startswith("s3://")
        self.endpoint.setEnabled(s3)
        for edit in (self.key_id, self.secret):
            edit.setEnabled(s3 and self.keyring)

    def checked(self) -> tuple[str, str, S3Credentials | None]:
        """Target, endpoint and typed credentials (None: none typed); UsageError if wrong."""
        target = check_target_spec(self.target.text())
        s3 = target.startswith("s3://")
        endpoint = check_endpoint(self.endpoint.text()) if s3 else ""
        key_id, secret = self.key_id.text().strip(), self.secret.text()
        if s3 and bool(key_id) != bool(secret):
            raise UsageError("give both the S3 access key id and its secret key")
        return target, endpoint, S3Credentials(key_id, secret) if s3 and key_id else None


def _folder_or_home(text: str) -> Path:
    path = Path(text).expanduser() if text and "://" not in text else Path.home()
    return path if path.is_dir() else Path.home()


def _error_label(name: str) -> QLabel:
    label = QLabel("")
    label.setObjectName(name)
    label.setStyleSheet("color: palette(highlight);")
    label.setWordWrap(True)
    return label


class BackupSettingsDialog(QDialog):
    """Where backups go, and the S3 credentials (to the keyring)."""

    def __init__(self, settings: AppSettings, *, stored_credentials: bool, keyring: bool,
                 note: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("backupSettings")
        self.setWindowTitle("Backup settings")
        form = QFormLayout(self)
        if note:
            form.addRow(QLabel(note))
        self.fields = TargetFields(form, self, settings.backup_target,
                                   settings.backup_s3_endpoint,
                                   stored_credentials=stored_credentials, keyring=keyring)
        self.error = _error_label("backupSettingsError")
        form.addRow(self.error)
        add_ok_cancel(form, self)
        self._change: BackupSettingsChange | None = None

    def accept(self) -> None:
        try:
            self._change = BackupSettingsChange(*self.fields.checked())
        except BlankSlateError as exc:
            self.error.setText(str(exc))
            return
        super().accept()

    def change(self) -> BackupSettingsChange:
        assert self._change is not None, "only after OK"
        return self._change


class BackupPassphraseDialog(QDialog):
    """The backup passphrase; typed twice when the target gets its first backup."""

    def __init__(self, where: str, *, new: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("backupPassphrase")
        self.setWindowTitle("Backup passphrase")
        self.new = new
        form = QFormLayout(self)
        form.addRow(QLabel(f"A new backup at {where}: choose its passphrase. Without it the "
                           "backup cannot be read — keep it safe." if new
                           else f"Passphrase of the backup at {where}:"))
        self.passphrase = QLineEdit()
        self.passphrase.setObjectName("backupPassphraseField")
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        self.again = QLineEdit(self)
        self.again.setObjectName("backupPassphraseAgain")
        self.again.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("Passphrase", self.passphrase)
        if new:
            form.addRow("Repeat it", self.again)
        else:
            self.again.hide()
        self.error = _error_label("backupPassphraseError")
        form.addRow(self.error)
        add_ok_cancel(form, self)

    def accept(self) -> None:
        if not self.passphrase.text():
            self.error.setText("A backup needs a passphrase.")
            return
        if self.new and self.again.text() != self.passphrase.text():
            self.error.setText("The two passphrases differ.")
            self.again.setFocus()
            return
        super().accept()


class RestoreDialog(QDialog):
    """Restore from backup…: where, passphrase → Find backups → snapshot and contexts →
    Restore. ``find_requested(BackupSource, passphrase)`` and ``restore_requested
    (RestoreChoice)`` go to the app side, which answers with ``show_snapshots`` or
    ``show_error`` (one line)."""

    find_requested = Signal(object, str)
    restore_requested = Signal(object)

    def __init__(self, settings: AppSettings, *, stored_credentials: bool, keyring: bool,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("restoreDialog")
        self.setWindowTitle("Restore from backup")
        self.setMinimumWidth(520)
        form = QFormLayout(self)
        self.fields = TargetFields(form, self, settings.backup_target,
                                   settings.backup_s3_endpoint,
                                   stored_credentials=stored_credentials, keyring=keyring)
        self.passphrase = QLineEdit()
        self.passphrase.setObjectName("restorePassphrase")
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("Backup passphrase", self.passphrase)
        self.find_button = QPushButton("Find backups")
        self.find_button.setObjectName("findBackups")
        self.find_button.clicked.connect(self._find)
        form.addRow("", self.find_button)
        self.snapshot = QComboBox()
        self.snapshot.setObjectName("restoreSnapshot")
        self.snapshot.currentIndexChanged.connect(self._show_contexts)
        self.contexts = QListWidget()
        self.contexts.setObjectName("restoreContexts")
        form.addRow("Snapshot", self.snapshot)
        form.addRow("Contexts", self.contexts)
        self.as_name = QLineEdit()
        self.as_name.setObjectName("restoreAs")
        self.as_name.setPlaceholderText("its own name")
        self.as_name.setToolTip("Restore one context under a new name, e.g. next to the one "
                                "of that name here")
        form.addRow("Restore as", self.as_name)
        form.addRow(QLabel("A context that holds data here is never overwritten: restore it "
                           "under another name."))
        self.error = _error_label("restoreError")
        form.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.restore_button = buttons.addButton("Restore",
                                                QDialogButtonBox.ButtonRole.AcceptRole)
        self.restore_button.setObjectName("restoreButton")
        self.restore_button.setEnabled(False)
        self.restore_button.clicked.connect(self._restore)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self._snapshots: list[dict[str, Any]] = []
        self._source: BackupSource | None = None

    def _find(self) -> None:
        try:
            target, endpoint, credentials = self.fields.checked()
        except BlankSlateError as exc:
            self.show_error(str(exc))
            return
        if not self.passphrase.text():
            self.show_error("Type the backup's passphrase.")
            return
        self._source = BackupSource(target, endpoint, credentials)
        self.set_busy(True)
        self.error.setText("")
        self.find_requested.emit(self._source, self.passphrase.text())

    def set_busy(self, busy: bool) -> None:
        self.find_button.setEnabled(not busy)
        self.restore_button.setEnabled(not busy and bool(self._snapshots))

    def show_error(self, message: str) -> None:
        """One line (never a traceback: messages come from ``BlankSlateError``); nothing
        for a job the user cancelled."""
        self.set_busy(False)
        if message != CANCELLED:
            self.error.setText(message.splitlines()[0] if message else "")

    def show_snapshots(self, snapshots: list[dict[str, Any]]) -> None:
        """``core.backup.snapshot_summary``'s list (oldest first): newest shown first."""
        self._snapshots = list(reversed(snapshots))
        self.snapshot.clear()
        for snap in self._snapshots:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(snap["created_at"] or 0))
            self.snapshot.addItem(f"{when} — {', '.join(snap['contexts']) or 'empty'}",
                                  snap["snapshot"])
        self.error.setText("" if snapshots else "This backup holds no snapshot yet.")
        self.set_busy(False)
        self._show_contexts()

    def _show_contexts(self) -> None:
        self.contexts.clear()
        i = self.snapshot.currentIndex()
        if not 0 <= i < len(self._snapshots):
            return
        for name, info in sorted(self._snapshots[i]["contexts"].items()):
            item = QListWidgetItem(f"{name} ({info.get('image')}, {human_bytes(info['bytes'])})")
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
            self.contexts.addItem(item)

    def checked_contexts(self) -> list[str]:
        return [str(self.contexts.item(i).data(Qt.ItemDataRole.UserRole))
                for i in range(self.contexts.count())
                if self.contexts.item(i).checkState() is Qt.CheckState.Checked]

    def _restore(self) -> None:
        names = self.checked_contexts()
        as_name = self.as_name.text().strip() or None
        if self._source is None or not names:
            self.show_error("Choose at least one context to restore.")
            return
        if as_name is not None and len(names) != 1:
            self.show_error("“Restore as” renames one context: check only that one.")
            return
        self.set_busy(True)
        self.restore_button.setEnabled(False)
        self.error.setText("")
        self.restore_requested.emit(RestoreChoice(
            self._source, self.passphrase.text(), str(self.snapshot.currentData()), names,
            as_name))

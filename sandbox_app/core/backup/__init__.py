"""Encrypted, deduplicated backup of contexts to a directory or S3, and restore.

Above ``contexts`` and ``images``: a backup holds a context's profile, every file of its data
folder, its key (inside the encryption) and the snapshot points it starts from.
"""

from .credentials import CredentialStore, S3Credentials
from .engine import BackupReport, CheckReport, backup, check, snapshot_summary
from .files import Stats
from .record import LastBackup, forget_backup, last_backups, record_backup
from .repository import Repository, SnapshotInfo
from .restore import RestoreReport, holds_data, restore
from .target import (
    BackupError,
    DirTarget,
    MissingObject,
    S3Target,
    Target,
    check_endpoint,
    check_target_spec,
    open_target,
)

__all__ = [
    "BackupError",
    "BackupReport",
    "CheckReport",
    "CredentialStore",
    "DirTarget",
    "LastBackup",
    "MissingObject",
    "Repository",
    "RestoreReport",
    "S3Credentials",
    "S3Target",
    "SnapshotInfo",
    "Stats",
    "Target",
    "backup",
    "check",
    "check_endpoint",
    "check_target_spec",
    "forget_backup",
    "holds_data",
    "last_backups",
    "open_target",
    "record_backup",
    "restore",
    "snapshot_summary",
]

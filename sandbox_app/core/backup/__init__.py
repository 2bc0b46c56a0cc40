"""Encrypted, deduplicated backup of contexts to a directory or S3, and restore.

Above ``contexts`` and ``images``: a backup holds a context's profile, every file of its data
folder, its key (inside the encryption) and the snapshot points it starts from.
"""

from .engine import BackupReport, CheckReport, backup, check, snapshot_summary
from .files import Stats
from .repository import Repository, SnapshotInfo
from .restore import RestoreReport, restore
from .target import BackupError, DirTarget, MissingObject, S3Target, Target, open_target

__all__ = [
    "BackupError",
    "BackupReport",
    "CheckReport",
    "DirTarget",
    "MissingObject",
    "Repository",
    "RestoreReport",
    "S3Target",
    "SnapshotInfo",
    "Stats",
    "Target",
    "backup",
    "check",
    "open_target",
    "restore",
    "snapshot_summary",
]

"""One error hierarchy. Every error a user can cause is a BlankSlateError.

The CLI prints ``str(err)`` on one line and exits with ``err.exit_code``; the GUI shows the
same text in a dialog. Anything else escaping is a bug and may show a traceback.
"""

from __future__ import annotations


class BlankSlateError(Exception):
    """Base class: a one-line, user-facing message and an exit code."""

    exit_code = 1


class UsageError(BlankSlateError):
    """Bad input: invalid name, unknown option combination."""

    exit_code = 2


class NotFoundError(BlankSlateError):
    """Unknown context or image."""

    exit_code = 3


class QemuError(BlankSlateError):
    """QEMU is missing, failed to launch, or died."""

    exit_code = 4


class ImageError(BlankSlateError):
    """An image or snapshot point is missing, corrupt or stale."""

    exit_code = 5


class DiskFullError(BlankSlateError):
    """No space left on the device holding our data."""

    exit_code = 6


class AuthError(BlankSlateError):
    """Wrong passphrase, or a locked context."""

    exit_code = 7


class GuestError(BlankSlateError):
    """The guest (its agent) did not answer or misbehaved."""

    exit_code = 8


class Cancelled(BlankSlateError):
    """The user cancelled a long operation."""

    exit_code = 130

"""Small widgets and icons more than one view shows."""

from __future__ import annotations

from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout


def swatch(color: str, size: int = 14) -> QIcon:
    """A small square in a context's color (tray entries, dialogs)."""
    pix = QPixmap(size, size)
    pix.fill(QColor(color))
    return QIcon(pix)


def text_color(background: str) -> str:
    """Black or white, whichever reads better on ``background``."""
    c = QColor(background)
    return "#000000" if (c.red() * 299 + c.green() * 587 + c.blue() * 114) > 150_000 else "#ffffff"


def add_ok_cancel(form: QFormLayout, dialog: QDialog) -> None:
    """The dialog's OK/Cancel row, wired to its accept (its checks) and reject."""
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                               | QDialogButtonBox.StandardButton.Cancel)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    form.addRow(buttons)

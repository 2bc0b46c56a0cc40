"""Small widgets and icons more than one view shows."""

from __future__ import annotations

from PySide6.QtGui import QColor, QIcon, QPixmap


def swatch(color: str, size: int = 14) -> QIcon:
    """A small square in a context's color (launcher rows, tray entries)."""
    pix = QPixmap(size, size)
    pix.fill(QColor(color))
    return QIcon(pix)

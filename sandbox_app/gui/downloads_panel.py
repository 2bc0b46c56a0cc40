"""The session window's Downloads panel: the guest's downloaded files, Save to host, Send file.

A view only: its buttons emit the app's requests (``AppSignals``); ``gui.transfers`` lists
the files, copies them and calls ``show_files`` with the result. Guest file names are shown
as they would be saved on the host (sanitised: no control or bidi-override characters).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.guest import GuestFile, sanitize_name
from .format import human_bytes
from .signals import AppSignals

_FILE_ROLE = Qt.ItemDataRole.UserRole


class DownloadsPanel(QWidget):
    """Lists the guest's Downloads and Persistent folders; Refresh, Save to host…, Move to
    Persistent, Send file…."""

    def __init__(self, context: str, signals: AppSignals, parent: QWidget | None = None
                 ) -> None:
        super().__init__(parent)
        self.context = context
        self.list = QListWidget()
        self.list.setObjectName("downloadsList")
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.itemSelectionChanged.connect(self._update_buttons)
        self.list.itemDoubleClicked.connect(lambda _i: self._save())
        self.status = QLabel("Not listed yet")
        self.status.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("List the guest's Downloads folder again")
        self.refresh_button.clicked.connect(
            lambda: signals.downloads_refresh_requested.emit(context))
        self.save_button = QPushButton("Save to host…")
        self.save_button.setToolTip("Copy the selected files into a folder on this computer "
                                    "(nothing is opened)")
        self.save_button.clicked.connect(self._save)
        self.move_button = QPushButton("Move to Persistent")
        self.move_button.setToolTip("Move the selected downloads into the context's "
                                    "persistent folder: they outlive this session")
        self.move_button.clicked.connect(self._move)
        self.send_button = QPushButton("Send file…")
        self.send_button.setToolTip("Copy files from this computer into the guest's Downloads "
                                    "folder (or drop them onto the window)")
        self.send_button.clicked.connect(lambda: signals.send_files_requested.emit(context, []))
        self._signals = signals
        buttons = QHBoxLayout()
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.move_button)
        buttons.addWidget(self.send_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self._busy = False
        self._update_buttons()

    def show_files(self, files: list[GuestFile], saved: set[GuestFile]) -> None:
        """Show the guest's files; those saved to (or sent from) the host are marked."""
        selected = {(f.folder, f.name) for f in self.selected()}
        self.list.clear()
        for f in sorted(files, key=lambda f: (self._persistent(f), f.name.casefold())):
            mark = "✓ " if f in saved else ""
            where = "Persistent/" if self._persistent(f) else ""
            item = QListWidgetItem(f"{mark}{where}{sanitize_name(f.name)}   "
                                   f"({human_bytes(f.size)})")
            item.setData(_FILE_ROLE, f)
            item.setToolTip("saved to the host in this session" if mark
                            else "not saved to the host yet")
            self.list.addItem(item)
            item.setSelected((f.folder, f.name) in selected)
        unsaved = sum(1 for f in files if f not in saved)
        self.status.setText(f"{len(files)} file{'s' if len(files) != 1 else ''}"
                            + (f", {unsaved} not saved to the host" if unsaved else ""))
        self._update_buttons()

    def show_error(self, message: str) -> None:
        self.status.setText(message)

    def selected(self) -> list[GuestFile]:
        return [item.data(_FILE_ROLE) for item in self.list.selectedItems()]

    def select_all(self) -> None:
        self.list.selectAll()

    def set_busy(self, busy: bool) -> None:
        """While a copy runs: no second one (they would race for the same host names)."""
        self._busy = busy
        self._update_buttons()

    def _save(self) -> None:
        if self.selected() and not self._busy:
            self._signals.save_downloads_requested.emit(self.context, self.selected())

    @staticmethod
    def _persistent(f: GuestFile) -> bool:
        return f.folder.rstrip("/").endswith("/Persistent")

    def _move(self) -> None:
        items = [f for f in self.selected() if not self._persistent(f)]
        if items and not self._busy:
            self._signals.move_to_persistent_requested.emit(self.context, items)

    def _update_buttons(self) -> None:
        self.save_button.setEnabled(bool(self.selected()) and not self._busy)
        self.move_button.setEnabled(not self._busy and any(
            not self._persistent(f) for f in self.selected()))
        self.send_button.setEnabled(not self._busy)

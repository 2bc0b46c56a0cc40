"""The launcher: every context with its color, image, state, size on disk and last keep.

It carries every action the tray has (Start/Open, Quick reset, Stop, Stop all, Quit), so on
desktops without a system tray (``QSystemTrayIcon.isSystemTrayAvailable()`` False) nothing is
lost: closing the launcher then quits (after asking if sessions run) instead of hiding it.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.contexts import Context, ContextStore, key_store
from ..core.errors import BlankSlateError
from ..core.images import ImageStore
from ..core.vm import TCG_WARNING
from .actions import Action, actions_for
from .dialogs import NewContextDialog, ask
from .format import human_bytes
from .protocols import AppState
from .widgets import swatch

COLUMNS = ["Context", "Image", "State", "Size on disk", "Lock", "Last kept"]
REFRESH_MS = 5000  # sizes grow while sessions run; cheap to re-read
BUTTON_ACTIONS = {"Start / Open": Action.OPEN, "Quick reset": Action.QUICK_RESET,
                  "Stop": Action.STOP, "Remove…": Action.REMOVE}


BROKEN_COLOR = "#888888"


class LauncherWindow(QMainWindow):
    """Lists contexts; emits the app's requests for the selected one."""

    def __init__(self, app: AppState, *, has_tray: bool = True) -> None:
        super().__init__()
        self.app = app
        self.has_tray = has_tray
        signals = app.signals
        self.setWindowTitle("Blank Slate")
        self.resize(820, 380)
        self.banner = QLabel("⚠ " + TCG_WARNING)
        self.banner.setObjectName("tcgBanner")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background:#fff3cd; color:#664d03; padding:8px;"
                                  "border:1px solid #ffe69c;")
        self.banner.setVisible(False)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.doubleClicked.connect(lambda _i: self._emit(signals.open_requested))
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        for label, slot in (
            ("Start / Open", lambda: self._emit(signals.open_requested)),
            ("Quick reset", lambda: self._emit(signals.quick_reset_requested)),
            ("Stop", lambda: self._emit(signals.stop_requested)),
            ("New context…", self.new_context),
            ("Remove…", self.remove_selected),
            ("Stop all", signals.stop_all_requested.emit),
            ("Quit", signals.quit_requested.emit),
        ):
            button = QPushButton(label)
            button.clicked.connect(slot)
            self.buttons[label] = button
            row.addWidget(button)
            if label == "Remove…":
                row.addStretch(1)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(self.banner)
        layout.addWidget(self.table)
        layout.addLayout(row)
        self.setCentralWidget(body)
        signals.changed.connect(self.refresh)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.refresh)
        self._timer.start(REFRESH_MS)
        signals.tcg_detected.connect(self.banner.setVisible)
        self.refresh()

    # ------------------------------------------------------------------ selection

    def selected(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return item.text() if item else None

    def select(self, name: str) -> None:
        for r in range(self.table.rowCount()):
            item = self.table.item(r, 0)
            if item is not None and item.text() == name:
                self.table.selectRow(r)

    def _emit(self, signal: object) -> None:
        name = self.selected()
        if name is not None:
            signal.emit(name)  # type: ignore[attr-defined]

    def _update_buttons(self) -> None:
        name = self.selected()
        allowed = actions_for(self.app.state(name) if name else None)
        for label, action in BUTTON_ACTIONS.items():
            self.buttons[label].setEnabled(action in allowed)
        self.buttons["Stop all"].setEnabled(bool(self.app.running()))

    # ------------------------------------------------------------------ contents

    def _cells(self, ctx: Context, protected: bool) -> list[str]:
        p = ctx.profile
        kept = ctx.manifest().kept_at
        state = self.app.state(p.name).value + (" ⚠" if self.app.warnings(p.name) else "")
        return [p.name, p.image, state, human_bytes(ctx.size_bytes()),
                "passphrase" if protected else "—",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(kept)) if kept else "never"]

    def refresh(self) -> None:
        keep = self.selected()
        try:
            contexts, broken = ContextStore(self.app.paths).scan()
            keys = key_store(self.app.paths)
            rows = [(c.profile.color, self._cells(c, keys.is_protected(c.name)),
                     "\n".join(self.app.warnings(c.name))) for c in contexts]
        except (BlankSlateError, OSError) as exc:
            self.statusBar().showMessage(str(exc))
            return
        # A broken context is listed with its reason (it can be removed); the others work.
        rows += [(BROKEN_COLOR, [b.name, "—", "broken", "—", "—", "—"], b.reason)
                 for b in broken]
        self.table.setRowCount(len(rows))
        for r, (color, cells, reason) in enumerate(rows):
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c == 0:
                    item.setIcon(swatch(color))
                if reason:
                    item.setToolTip(reason)
                self.table.setItem(r, c, item)
        if keep is not None:
            self.select(keep)
        if self.selected() is None and rows:
            self.table.selectRow(0)
        jobs = [j.name for j in self.app.jobs.running() if not j.name.startswith("display-")]
        self.statusBar().showMessage(("Working: " + ", ".join(jobs)) if jobs else "")
        self._update_buttons()

    # ------------------------------------------------------------------ dialogs

    def new_context(self) -> NewContextDialog:
        images = [i.name for i in ImageStore(self.app.paths).list()]
        dialog = NewContextDialog(images, self)
        dialog.accepted.connect(lambda: self.app.signals.create_requested.emit(
            dialog.profile(), dialog.passphrase.text()))
        dialog.open()
        return dialog

    def remove_selected(self) -> QMessageBox | None:
        name = self.selected()
        if name is None:
            return None
        return ask(self, "Remove context",
                   f"Remove “{name}” and securely erase everything kept in it?\n"
                   "This cannot be undone.",
                   lambda: self.app.signals.remove_requested.emit(name), name="confirmRemove")

    # ------------------------------------------------------------------ window

    def bring_up(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def closeEvent(self, event: QCloseEvent) -> None:
        event.ignore()
        if self.has_tray:
            self.hide()  # the app lives on in the tray
        else:
            self.app.signals.quit_requested.emit()  # asks first if sessions run

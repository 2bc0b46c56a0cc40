"""The tray icon: per-context Open / Quick reset / Stop, Stop all, Back up all now, Quit; and
the desktop notifications (``AppSignals.notify``: a keep, an erase, an image build, a backup
or a restore ended or failed).

The menu is rebuilt each time it opens (``aboutToShow``), so it always shows the current
contexts and states without the tray tracking anything. Where the desktop has no tray the
icon is never shown and the launcher, which has the same actions, stays the way in.
"""

from __future__ import annotations

from functools import partial

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QApplication, QMenu, QSystemTrayIcon

from ..core.contexts import ContextStore
from ..core.errors import BlankSlateError
from .actions import Action, actions_for
from .protocols import AppState
from .widgets import swatch

NOTIFY_MS = 8000


class Tray(QObject):
    def __init__(self, app: AppState) -> None:
        super().__init__()
        self.app = app
        self.icon = QSystemTrayIcon(QApplication.windowIcon())
        self.menu = QMenu()
        self.menu.aboutToShow.connect(self.rebuild)
        self.icon.setContextMenu(self.menu)
        self.icon.setToolTip("Blank Slate")
        self.icon.activated.connect(self._activated)
        app.signals.notify.connect(self.notify)
        self.rebuild()
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.icon.show()

    def notify(self, title: str, message: str) -> None:
        """A desktop notification from the tray icon (nothing where there is no tray)."""
        self.icon.showMessage(title, message, QApplication.windowIcon(), NOTIFY_MS)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason is QSystemTrayIcon.ActivationReason.Trigger:
            self.app.signals.show_launcher_requested.emit()

    def rebuild(self) -> None:
        s = self.app.signals
        self.menu.clear()
        try:
            contexts = ContextStore(self.app.paths).list()
        except BlankSlateError:
            contexts = []
        for ctx in contexts:
            name = ctx.profile.name
            state = self.app.state(name)
            allowed = actions_for(state)
            sub = self.menu.addMenu(swatch(ctx.profile.color), f"{name} — {state.value}")
            sub.setObjectName(f"tray-{name}")
            sub.addAction("Open", partial(s.open_requested.emit, name)).setEnabled(
                Action.OPEN in allowed)
            sub.addAction("Quick reset", partial(s.quick_reset_requested.emit, name)).setEnabled(
                Action.QUICK_RESET in allowed)
            sub.addAction("Suspend", partial(s.suspend_requested.emit, name)).setEnabled(
                Action.STOP in allowed)
            sub.addAction("Stop…", partial(s.stop_requested.emit, name)).setEnabled(
                Action.STOP in allowed)
        self.menu.addSeparator()
        self.menu.addAction("Stop all (discard)", s.stop_all_requested.emit).setEnabled(
            bool(self.app.running()))
        self.menu.addAction("Back up all now", lambda: s.backup_requested.emit([]))
        self.menu.addAction("Show launcher", s.show_launcher_requested.emit)
        self.menu.addAction("Quit", s.quit_requested.emit)

    def context_menu(self, name: str) -> QMenu | None:
        """The submenu of one context (tests drive it like a user would)."""
        menu = self.menu.findChild(QMenu, f"tray-{name}")
        return menu if isinstance(menu, QMenu) else None

    def hide(self) -> None:
        self.icon.hide()

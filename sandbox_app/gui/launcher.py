"""The launcher: one card per context (``context_card``) with its color, name, state, image,
size on disk, last keep and last backup, a large Start button and its quick actions; a
Backup menu (Back up all now, Backup settings…, Restore from backup…), and — while no
context holds anything yet, as on a fresh install — an offer to restore from a backup.

It carries every action the tray has (Start/Open, Quick reset, Stop, Stop all, Quit), so on
desktops without a system tray (``QSystemTrayIcon.isSystemTrayAvailable()`` False) nothing is
lost: closing the launcher then quits (after asking if sessions run) instead of hiding it.
Keyboard: Tab goes through the cards and their buttons, Up/Down from card to card, Enter
starts the focused one.
"""

from __future__ import annotations

import contextlib
import time

from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ..core.backup import LastBackup, holds_data, last_backups
from ..core.contexts import Context, ContextStore, key_store
from ..core.errors import BlankSlateError
from ..core.images import Image, ImageStore
from ..core.session.updates import on_old_image
from ..core.vm import TCG_WARNING
from .context_card import CardInfo, ContextCard
from .dialogs import NewContextDialog, ask
from .format import age, human_bytes
from .protocols import AppState
from .settings_dialog import ContextSettingsDialog

REFRESH_MS = 5000  # sizes grow while sessions run; cheap to re-read
BROKEN_COLOR = "#888888"


class LauncherWindow(QMainWindow):
    """The contexts as cards; emits the app's requests for them."""

    def __init__(self, app: AppState, *, has_tray: bool = True) -> None:
        super().__init__()
        self.app = app
        self.has_tray = has_tray
        signals = app.signals
        self.setWindowTitle("Blank Slate")
        self.resize(760, 520)
        self.banner = QLabel("⚠ " + TCG_WARNING)
        self.banner.setObjectName("tcgBanner")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background:#fff3cd; color:#664d03; padding:8px;"
                                  "border:1px solid #ffe69c; border-radius:6px;")
        self.banner.setVisible(False)
        self.cards: dict[str, ContextCard] = {}
        self._selected: str | None = None
        self._list = QWidget()
        self._list.setObjectName("cardList")
        self._list_layout = QVBoxLayout(self._list)
        self._list_layout.setSpacing(10)
        self._list_layout.addStretch(1)
        self.empty = QLabel("No contexts yet: make one with “New context…”.")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setVisible(False)
        self.restore_offer = QWidget()
        self.restore_offer.setObjectName("restoreOffer")
        offer = QHBoxLayout(self.restore_offer)
        offer.setContentsMargins(0, 0, 0, 0)
        offer.addWidget(QLabel("Moving from another computer? Your contexts can come back "
                               "from a backup."))
        self.restore_button = QPushButton("Restore from backup…")
        self.restore_button.setObjectName("restoreOfferButton")
        self.restore_button.clicked.connect(signals.restore_requested.emit)
        offer.addWidget(self.restore_button)
        offer.addStretch(1)
        self.restore_offer.setVisible(False)
        backup_menu = self.menuBar().addMenu("&Backup")
        backup_menu.setObjectName("backupMenu")
        self.backup_menu = backup_menu
        backup_menu.addAction("Back up all now", lambda: signals.backup_requested.emit([]))
        backup_menu.addAction("Backup settings…", signals.backup_settings_requested.emit)
        backup_menu.addAction("Restore from backup…", signals.restore_requested.emit)
        self.card_area = QScrollArea()
        self.card_area.setWidgetResizable(True)
        self.card_area.setFrameShape(QScrollArea.Shape.NoFrame)
        self.card_area.setWidget(self._list)
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        for label, slot in (("New context…", self.new_context),
                            ("Stop all", signals.stop_all_requested.emit),
                            ("Quit", signals.quit_requested.emit)):
            button = QPushButton(label)
            button.clicked.connect(slot)
            self.buttons[label] = button
            row.addWidget(button)
            if label == "New context…":
                row.addStretch(1)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(16, 16, 16, 12)
        layout.addWidget(self.banner)
        layout.addWidget(self.restore_offer)
        layout.addWidget(self.empty)
        layout.addWidget(self.card_area, 1)
        layout.addLayout(row)
        self.setCentralWidget(body)
        signals.changed.connect(self.refresh)
        self._timer = QTimer(self)  # runs while the launcher is shown (showEvent)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        signals.tcg_detected.connect(self.banner.setVisible)
        self.refresh()

    # ------------------------------------------------------------------ selection

    def selected(self) -> str | None:
        return self._selected if self._selected in self.cards else None

    def select(self, name: str) -> None:
        """Make ``name`` the chosen card (and give it the keyboard focus)."""
        card = self.cards.get(name)
        if card is None:
            return
        self._choose(name)
        card.setFocus(Qt.FocusReason.OtherFocusReason)
        self.card_area.ensureWidgetVisible(card)

    def card(self, name: str) -> ContextCard:
        return self.cards[name]

    def _choose(self, name: str) -> None:
        self._selected = name
        for other, card in self.cards.items():
            card.set_selected(other == name)

    def _step(self, name: str, delta: int) -> None:
        names = list(self.cards)
        i = names.index(name) + delta
        if 0 <= i < len(names):
            self.select(names[i])

    # ------------------------------------------------------------------ contents

    def _info(self, ctx: Context, protected: bool, images: dict[str, Image],
              backups: dict[str, LastBackup]) -> CardInfo:
        p = ctx.profile
        kept = ctx.manifest().kept_at
        image = p.image
        built = images[p.image].built_at if p.image in images else None
        if built is not None:
            image += f" · built {age(time.time() - built)}" if built else ""
        else:
            image += " (not built yet)"
        kept_text = ("kept " + time.strftime("%Y-%m-%d %H:%M", time.localtime(kept))
                     if kept else "never kept")
        suspended = ""
        with contextlib.suppress(OSError):
            since = ctx.suspended_path.stat().st_mtime
            suspended = f"suspended {age(time.time() - since)} ago"
        details = f"{image} · {human_bytes(ctx.size_bytes())} · {suspended or kept_text}"
        if note := self.app.image_note(ctx):
            details += f"\n{note}"
        last = backups.get(p.name)
        backup = f"backed up {age(time.time() - last.at)}" if last else "never backed up"
        old_image = False
        if p.image in images:
            with contextlib.suppress(BlankSlateError, OSError):
                old_image = on_old_image(ctx, images[p.image])
        return CardInfo(p.name, p.color, self.app.state(p.name), details,
                        protected=protected, warnings="\n".join(self.app.warnings(p.name)),
                        suspended=bool(suspended), backup=backup, old_image=old_image)

    def refresh(self) -> None:
        try:
            contexts, broken = ContextStore(self.app.paths).scan()
            keys = key_store(self.app.paths)
            images = {i.name: i for i in ImageStore(self.app.paths).list()}
            backups = last_backups(self.app.paths)
            infos = [self._info(c, keys.is_protected(c.name), images, backups)
                     for c in contexts]
            fresh = not broken and not any(holds_data(c) for c in contexts)
        except (BlankSlateError, OSError) as exc:
            self.statusBar().showMessage(str(exc))
            return
        self.restore_offer.setVisible(fresh)
        # A broken context is listed with its reason (it can be removed); the others work.
        infos += [CardInfo(b.name, BROKEN_COLOR, None, "", problem=b.reason) for b in broken]
        self._show_cards(infos)
        if self.selected() is None and self.cards:
            self._choose(next(iter(self.cards)))
        self.empty.setVisible(not self.cards)
        self.buttons["Stop all"].setEnabled(bool(self.app.running()))
        jobs = [j.name for j in self.app.jobs.running() if not j.name.startswith("display-")]
        self.statusBar().showMessage(("Working: " + ", ".join(jobs)) if jobs else "")

    def _show_cards(self, infos: list[CardInfo]) -> None:
        """Update the cards in place (focus stays), adding and dropping as contexts come
        and go."""
        names = [i.name for i in infos]
        if names != list(self.cards):
            for card in self.cards.values():
                self._list_layout.removeWidget(card)
                card.hide()
                card.deleteLater()
            self.cards = {}
            for i, info in enumerate(infos):
                card = self._make_card(info)
                self.cards[info.name] = card
                self._list_layout.insertWidget(i, card)
            for before, after in zip(list(self.cards.values()), list(self.cards.values())[1:],
                                     strict=False):
                QWidget.setTabOrder(before.buttons["Remove…"], after)
            if self._selected in self.cards:
                self._choose(self._selected)
            return
        for info in infos:
            self.cards[info.name].show_info(info)

    def _make_card(self, info: CardInfo) -> ContextCard:
        s = self.app.signals
        card = ContextCard(info)
        card.start.connect(s.open_requested.emit)
        card.quick_reset.connect(s.quick_reset_requested.emit)
        card.stop.connect(s.stop_requested.emit)
        card.settings.connect(self.open_settings)
        card.remove.connect(self.remove)
        card.back_up.connect(lambda name: s.backup_requested.emit([name]))
        card.start_fresh.connect(self.start_fresh)
        card.chosen.connect(self._choose)
        card.step.connect(self._step)
        return card

    # ------------------------------------------------------------------ dialogs

    def new_context(self) -> NewContextDialog:
        images = [i.name for i in ImageStore(self.app.paths).list()]
        dialog = NewContextDialog(images, self)
        dialog.accepted.connect(lambda: self.app.signals.create_requested.emit(
            dialog.profile(), dialog.passphrase.text()))
        dialog.open()
        return dialog

    def open_settings(self, name: str) -> ContextSettingsDialog | None:
        """The context's Settings… dialog; on OK, the app is asked to apply the change."""
        try:
            profile = ContextStore(self.app.paths).get(name).profile
            protected = key_store(self.app.paths).is_protected(name)
        except BlankSlateError as exc:
            self.app.signals.error.emit(str(exc))
            return None
        dialog = ContextSettingsDialog(profile, protected=protected,
                                       running=name in self.app.running(), parent=self)
        dialog.accepted.connect(
            lambda: self.app.signals.settings_requested.emit(dialog.change()))
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def remove(self, name: str) -> QMessageBox:
        return ask(self, "Remove context",
                   f"Remove “{name}” and securely erase everything kept in it?\n"
                   "This cannot be undone.",
                   lambda: self.app.signals.remove_requested.emit(name), name="confirmRemove")

    def start_fresh(self, name: str) -> QMessageBox:
        """Confirm, then ask the app to start ``name`` fresh on its image's new build."""
        return ask(self, "Start fresh on the new image",
                   f"“{name}” was kept on an earlier build of its image. Start it fresh on "
                   "the new one?\nIts kept session (open pages, logins, everything kept) is "
                   "dropped and securely erased. Its persistent folder is kept.",
                   lambda: self.app.signals.reset_context_requested.emit(name),
                   name="confirmStartFresh")

    def remove_selected(self) -> QMessageBox | None:
        name = self.selected()
        return self.remove(name) if name is not None else None

    # ------------------------------------------------------------------ window

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() is QEvent.Type.PaletteChange:  # the desktop switched light/dark
            for card in self.cards.values():
                card.restyle(self.palette())

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.refresh()
        self._timer.start()

    def hideEvent(self, event: QHideEvent) -> None:
        # No refresh nobody sees; and a closed launcher (in the tray, or a test's) holds no
        # live timer that could outlast it.
        super().hideEvent(event)
        self._timer.stop()

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

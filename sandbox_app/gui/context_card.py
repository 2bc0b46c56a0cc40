"""One context in the launcher, as a card: its color, name, state, image, size, last keep,
last backup, a large Start button, the quick actions its state allows and a "More" menu
(Back up now, Start fresh on the new image…).

A view only: the buttons emit the card's signals (the launcher turns them into the app's
requests). Colors come from the system palette (``palette(...)`` in the style sheet), so the
card follows a light or dark desktop theme; only the context's own color is fixed.
Keyboard: the card takes focus (Tab), Enter or Return starts it, Up/Down go to the card
above or below (``step``).
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QFocusEvent, QKeyEvent, QMouseEvent, QPalette
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.session import RunState
from .actions import Action, actions_for, more_actions
from .widgets import text_color


@dataclass(frozen=True)
class CardInfo:
    """What a card shows (the launcher reads it from the store and the app)."""

    name: str
    color: str
    state: RunState | None  # None: the context is broken (``problem`` says why)
    details: str  # "tiny · built 3 days ago · 1.2 MiB · kept 2026-11-02 10:00"
    protected: bool = False
    warnings: str = ""
    problem: str = ""
    suspended: bool = False  # a suspended session waits: Start resumes (or discards) it
    backup: str = ""  # "backed up 3 hours ago" / "never backed up"
    old_image: bool = False  # kept on an earlier build of its image: it can start fresh


STYLE = """
ContextCard { background: palette(base); border: 1px solid palette(mid); border-radius: 10px; }
ContextCard[selected="true"] { border: 2px solid palette(highlight); }
QLabel#cardName { font-size: 15pt; font-weight: 600; }
QLabel#cardDetails, QLabel#cardBackup { color: palette(placeholder-text); }
QPushButton#cardAction { border: none; padding: 2px 6px; color: palette(link); }
QPushButton#cardAction:hover { text-decoration: underline; }
QPushButton#cardAction:disabled { color: palette(mid); }
"""


class ContextCard(QFrame):
    """A context's card. ``buttons``: "Start" and the quick actions, by label."""

    start = Signal(str)
    quick_reset = Signal(str)
    stop = Signal(str)
    settings = Signal(str)
    remove = Signal(str)
    back_up = Signal(str)
    start_fresh = Signal(str)  # on the image's new build (the launcher asks first)
    chosen = Signal(str)  # clicked or focused: the launcher's selection
    step = Signal(str, int)  # Up (-1) / Down (+1) pressed on the card

    def __init__(self, info: CardInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = info.name
        self.setObjectName(f"card-{info.name}")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.setStyleSheet(STYLE)
        self.setProperty("selected", False)
        self.stripe = QFrame()
        self.stripe.setFixedWidth(10)
        self.name_label = QLabel(info.name)
        self.name_label.setObjectName("cardName")
        self.state_label = QLabel()
        self.state_label.setObjectName("cardState")
        self.lock_label = QLabel("🔒")
        self.lock_label.setToolTip("Protected by a passphrase (asked at each start)")
        self.details = QLabel()
        self.details.setObjectName("cardDetails")
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)
        self.start_button = QPushButton("Start")
        self.start_button.setObjectName("cardStart")
        self.start_button.setMinimumSize(120, 44)
        self.start_button.clicked.connect(lambda: self.start.emit(self.name))
        self.buttons: dict[str, QPushButton] = {"Start": self.start_button}
        actions = QHBoxLayout()
        actions.setSpacing(4)
        for label, signal in (("Settings…", self.settings), ("Quick reset", self.quick_reset),
                              ("Stop", self.stop), ("Remove…", self.remove)):
            button = QPushButton(label)
            button.setObjectName("cardAction")
            button.setCursor(Qt.CursorShape.PointingHandCursor)
            button.clicked.connect(lambda _c=False, s=signal: s.emit(self.name))
            self.buttons[label] = button
            actions.addWidget(button)
        self.fresh_button = QPushButton("Start fresh on the new image…")
        self.fresh_button.setObjectName("cardAction")
        self.fresh_button.setToolTip("Drop the kept session and start on the image's current "
                                     "build; the persistent folder is kept")
        self.fresh_button.clicked.connect(lambda: self.start_fresh.emit(self.name))
        self.buttons["Start fresh…"] = self.fresh_button
        actions.addWidget(self.fresh_button)
        self.more_menu = QMenu(self)
        self.more_menu.setObjectName(f"cardMenu-{info.name}")
        self.back_up_action = self.more_menu.addAction(
            "Back up now", lambda: self.back_up.emit(self.name))
        self.fresh_action = self.more_menu.addAction(
            "Start fresh on the new image…", lambda: self.start_fresh.emit(self.name))
        more = QPushButton("More ▾")
        more.setObjectName("cardAction")
        more.setMenu(self.more_menu)
        self.buttons["More"] = more
        actions.addWidget(more)
        actions.addStretch(1)
        for button in self.buttons.values():
            button.installEventFilter(self)  # a focused button selects its card
        title = QHBoxLayout()
        title.addWidget(self.name_label)
        title.addWidget(self.state_label)
        title.addWidget(self.lock_label)
        title.addStretch(1)
        text = QVBoxLayout()
        text.setSpacing(2)
        text.addLayout(title)
        text.addWidget(self.details)
        self.backup_label = QLabel()
        self.backup_label.setObjectName("cardBackup")
        text.addWidget(self.backup_label)
        text.addLayout(actions)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 14, 0)
        row.setSpacing(14)
        row.addWidget(self.stripe)
        row.addLayout(text, 1)
        row.addWidget(self.start_button, 0, Qt.AlignmentFlag.AlignVCenter)
        self.info = info
        self.show_info(info)

    def show_info(self, info: CardInfo) -> None:
        """Show ``info`` (a refresh): labels, the stripe's color, what the state allows."""
        self.info = info
        self.stripe.setStyleSheet(f"background:{info.color}; border-top-left-radius:10px;"
                                  "border-bottom-left-radius:10px;")
        state = info.state.value if info.state is not None else "broken"
        if info.suspended and info.state is RunState.STOPPED:
            state = "suspended"
        self.state_label.setText(state + (" ⚠" if info.warnings else ""))
        self.state_label.setToolTip(info.warnings or info.problem)
        self.lock_label.setVisible(info.protected)
        self.details.setText(info.problem or info.details)
        self.setToolTip(info.problem)
        allowed = actions_for(info.state) if info.state is not None else set()
        running = info.state is RunState.RUNNING
        self.start_button.setText("Open" if running else "Resume…" if info.suspended
                                  else "Start")
        self.start_button.setToolTip(f"Show the window of “{info.name}”" if running
                                     else f"Start a session of “{info.name}” (Enter)")
        self.start_button.setEnabled(Action.OPEN in allowed)
        fg = text_color(info.color)
        self.start_button.setStyleSheet(
            f"QPushButton {{ background:{info.color}; color:{fg}; font-size:12pt;"
            " font-weight:600; border-radius:8px; padding:6px 18px; }"
            "QPushButton:disabled { background: palette(mid); color: palette(base); }"
            "QPushButton:focus { border: 2px solid palette(highlight); }")
        for label, action in (("Settings…", Action.SETTINGS), ("Quick reset", Action.QUICK_RESET),
                              ("Stop", Action.STOP), ("Remove…", Action.REMOVE)):
            self.buttons[label].setEnabled(action in allowed)
        # Stop and Quick reset are for a running session; Remove… for one that is not
        # (a broken context can only be removed).
        self.buttons["Quick reset"].setVisible(running)
        self.buttons["Stop"].setVisible(running)
        self.buttons["Remove…"].setVisible(not running)
        if info.state is None:
            self.buttons["Remove…"].setEnabled(True)
        more = more_actions(info.state)
        self.backup_label.setText(info.backup)
        self.backup_label.setVisible(bool(info.backup))
        self.back_up_action.setEnabled(Action.BACK_UP in more)
        fresh = info.old_image and Action.START_FRESH in more
        self.fresh_action.setEnabled(fresh)
        self.fresh_button.setEnabled(fresh)
        self.fresh_button.setVisible(info.old_image)
        self.buttons["More"].setEnabled(bool(more))

    def set_selected(self, selected: bool) -> None:
        if self.property("selected") != selected:
            self.setProperty("selected", selected)
            self.style().unpolish(self)
            self.style().polish(self)

    def restyle(self, palette: QPalette) -> None:
        """The desktop switched light/dark: take its palette and resolve the style sheet's
        ``palette(...)`` colors again (the style sheet pins the palette it was polished with)."""
        self.setPalette(palette)
        self.setStyleSheet("")
        self.setStyleSheet(STYLE)
        self.show_info(self.info)

    # ------------------------------------------------------------------ input

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.start_button.isEnabled():
            self.start.emit(self.name)
        elif key in (Qt.Key.Key_Up, Qt.Key.Key_Down):
            self.step.emit(self.name, -1 if key == Qt.Key.Key_Up else 1)
        else:
            super().keyPressEvent(event)

    def focusInEvent(self, event: QFocusEvent) -> None:
        super().focusInEvent(event)
        self.chosen.emit(self.name)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        self.chosen.emit(self.name)
        super().mousePressEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        if self.start_button.isEnabled():
            self.start.emit(self.name)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() is QEvent.Type.FocusIn:
            self.chosen.emit(self.name)
        return False

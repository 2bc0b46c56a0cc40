"""A session's window: the guest's screen inside a thick frame in the context's color.

The context's name is always visible (title, a colored label above the screen) so the user
never types into the wrong context. Closing the window asks how to end the session.
"""

from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtGui import QAction, QCloseEvent, QColor
from PySide6.QtWidgets import QFrame, QLabel, QMainWindow, QToolBar, QVBoxLayout, QWidget

from ..core import rfb
from ..core.qemu import TCG_WARNING
from .asyncbridge import Job
from .display import VmDisplay
from .signals import AppSignals

FRAME_WIDTH = 8


def text_color(background: str) -> str:
    """Black or white, whichever reads better on ``background``."""
    c = QColor(background)
    return "#000000" if (c.red() * 299 + c.green() * 587 + c.blue() * 114) > 150_000 else "#ffffff"


class SessionWindow(QMainWindow):
    """One running session; toolbar: Quick reset, Stop."""

    def __init__(self, context: str, color: str, client: rfb.RfbClient, signals: AppSignals,
                 *, tcg: bool = False) -> None:
        super().__init__()
        self.context = context
        self.signals = signals
        self._closing_for_real = False
        self.setWindowTitle(f"{context} — Blank Slate")
        self.display = VmDisplay(client)
        fg = text_color(color)
        self.label = QLabel(f"{context}" + ("   ⚠ software emulation (no KVM)" if tcg else ""))
        self.label.setObjectName("contextLabel")
        self.label.setToolTip(TCG_WARNING if tcg else f"Everything here runs in “{context}”")
        self.label.setStyleSheet(
            f"background:{color}; color:{fg}; font-weight:bold; padding:4px 8px;")
        self.frame = QFrame()
        self.frame.setObjectName("sessionFrame")
        self.frame.setStyleSheet(
            f"#sessionFrame {{ border: {FRAME_WIDTH}px solid {color}; background: black; }}")
        inner = QVBoxLayout(self.frame)
        inner.setContentsMargins(FRAME_WIDTH, FRAME_WIDTH, FRAME_WIDTH, FRAME_WIDTH)
        inner.addWidget(self.display)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.label)
        layout.addWidget(self.frame)
        self.setCentralWidget(body)
        bar = QToolBar("Session")
        bar.setMovable(False)
        self.reset_action = QAction("Quick reset", self)
        self.reset_action.setToolTip("Throw this session away and continue on a clean one")
        self.reset_action.triggered.connect(lambda: signals.quick_reset_requested.emit(context))
        self.stop_action = QAction("Stop", self)
        self.stop_action.setToolTip("End this session: keep or discard its changes")
        self.stop_action.triggered.connect(lambda: signals.stop_requested.emit(context))
        bar.addAction(self.reset_action)
        bar.addAction(self.stop_action)
        self.addToolBar(bar)
        self.statusBar()
        # Start at the guest's own size, so nothing is scaled until the user resizes.
        self.display.set_preferred(QSize(client.width, client.height))
        self.adjustSize()

    def follow(self, job: Job) -> None:
        """Show a job's phases in the status bar; no second reset/stop while it runs."""
        for action in (self.reset_action, self.stop_action):
            action.setEnabled(False)
        job.progress.connect(lambda phase, _p: self.statusBar().showMessage(phase))
        job.ended.connect(self._job_ended)

    def _job_ended(self) -> None:
        self.statusBar().clearMessage()
        for action in (self.reset_action, self.stop_action):
            action.setEnabled(True)

    def replace_client(self, client: rfb.RfbClient) -> None:
        """After a quick reset: the new session's screen in the same window."""
        self.display.set_client(client)
        self.display.setFocus()

    def close_for_real(self) -> None:
        """Close without asking (the session has ended)."""
        self._closing_for_real = True
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._closing_for_real:
            event.accept()
            return
        event.ignore()  # the app asks keep/discard first and closes us when done
        self.signals.stop_requested.emit(self.context)

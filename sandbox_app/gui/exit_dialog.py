"""End of a session: "Keep changes" / "Discard — securely erase" / "Cancel", then progress.

The dialog is window-modal to its session window only, so the launcher, the tray and other
sessions stay usable while a keep or an erase runs (the work is an async job).

Before the choice, the guest's Downloads folder is listed: files not saved to the host in this
session are named in a warning, and Discard waits until that check has answered (a few
seconds at most: a guest that stalls cannot hold the dialog).
"""

from __future__ import annotations

import html
from enum import Enum

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QKeyEvent
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .asyncbridge import CANCELLED, Job
from .format import human_bytes


class ExitChoice(Enum):
    KEEP = "keep"
    DISCARD = "discard"
    CANCEL = "cancel"


class ExitDialog(QDialog):
    """Asks how to end a session, then follows the job that does it.

    ``chosen(ExitChoice)`` is emitted once; for KEEP/DISCARD the controller starts the job
    and hands it to ``follow()``; the dialog closes itself when the job ends.
    """

    chosen = Signal(object)

    def __init__(self, context: str, changed_bytes: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.context = context
        self.setWindowTitle(f"End session — {context}")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.question = QLabel(f"<b>End the session of “{context}”?</b>")
        self.details = QLabel(
            f"This session changed <b>{human_bytes(changed_bytes)}</b> of its disk.<br>"
            "<b>Keep</b>: the changes become this context's new starting point (encrypted).<br>"
            "<b>Discard</b>: every block the session wrote is overwritten with zeros and its "
            "key is forgotten.")
        self.details.setWordWrap(True)
        self.downloads_note = QLabel()
        self.downloads_note.setObjectName("unsavedDownloads")
        self.downloads_note.setWordWrap(True)
        self.downloads_note.setVisible(False)
        self.keep_button = QPushButton("Keep changes")
        self.discard_button = QPushButton("Discard — securely erase")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setDefault(True)  # the safe choice: nothing happens
        self.keep_button.clicked.connect(lambda: self._choose(ExitChoice.KEEP))
        self.discard_button.clicked.connect(lambda: self._choose(ExitChoice.DISCARD))
        self.cancel_button.clicked.connect(self.reject)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        self.phase = QLabel()
        self.phase.setVisible(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.keep_button)
        buttons.addWidget(self.discard_button)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.question)
        layout.addWidget(self.details)
        layout.addWidget(self.downloads_note)
        layout.addWidget(self.phase)
        layout.addWidget(self.progress)
        layout.addLayout(buttons)
        self._choice: ExitChoice | None = None
        self.rejected.connect(self._on_rejected)

    def checking_downloads(self) -> None:
        """The downloads check runs: say so, and hold Discard until it answers."""
        self.downloads_note.setText("Checking the guest's downloads…")
        self.downloads_note.setStyleSheet("")
        self.downloads_note.setVisible(True)
        self.discard_button.setEnabled(False)

    def show_unsaved(self, names: list[str]) -> None:
        """Warn about guest downloads not saved to the host (names already sanitised)."""
        self.discard_button.setEnabled(True)
        if not names:
            self.downloads_note.setVisible(False)
            return
        n = len(names)
        listed = html.escape(", ".join(names[:5]) + (", …" if n > 5 else ""))
        it = "them" if n > 1 else "it"
        self.downloads_note.setText(
            f"⚠ <b>{n} downloaded file{'s were' if n > 1 else ' was'} not saved to the "
            f"host</b>: {listed}.<br>Discard erases {it}; to keep {it}, Cancel and use "
            "Downloads → Save to host… first.")
        self.downloads_note.setTextFormat(Qt.TextFormat.RichText)
        self.downloads_note.setStyleSheet("background:#fff3cd; color:#664d03; padding:6px;")
        self.downloads_note.setVisible(True)

    def downloads_unknown(self, message: str) -> None:
        """The check failed (guest stalled or lied): say so, and let the user choose."""
        self.discard_button.setEnabled(True)
        self.downloads_note.setText(f"Could not check the guest's downloads ({message}).")
        self.downloads_note.setTextFormat(Qt.TextFormat.PlainText)
        self.downloads_note.setVisible(True)

    def choice(self) -> ExitChoice | None:
        return self._choice

    def _choose(self, choice: ExitChoice) -> None:
        if self._choice is None:
            self._choice = choice
            self.chosen.emit(choice)

    def _on_rejected(self) -> None:
        # Escape or the close box mean Cancel, but only before a choice was made.
        if self._choice is None:
            self._choice = ExitChoice.CANCEL
            self.chosen.emit(ExitChoice.CANCEL)

    def follow(self, job: Job) -> None:
        """Show the job's progress instead of the question; close when it ends."""
        keep = self._choice is ExitChoice.KEEP
        self.question.setText(f"<b>{'Keeping changes of' if keep else 'Securely erasing'} "
                              f"“{self.context}”…</b>")
        for button in (self.keep_button, self.discard_button, self.cancel_button):
            button.setVisible(False)
        self.progress.setVisible(True)
        self.phase.setVisible(True)
        job.progress.connect(self._on_progress)
        job.finished.connect(lambda _r: self.accept())
        job.failed.connect(self._on_failed)

    def _on_progress(self, phase: str, percent: int) -> None:
        self.phase.setText(phase)
        if percent < 0:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(percent)

    def _on_failed(self, message: str) -> None:
        # The controller shows the error; the session may still run (a failed keep resumes it).
        if message != CANCELLED:
            self.phase.setText(message)
        self.done(QDialog.DialogCode.Rejected)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if self._choice is not None:
            return  # no Escape while the work runs: it cannot be stopped halfway
        super().keyPressEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._choice is not None and self.progress.isVisible() and self.isVisible():
            event.ignore()  # closes itself when the job ends
            return
        super().closeEvent(event)

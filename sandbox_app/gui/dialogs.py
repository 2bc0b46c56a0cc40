"""Small dialogs: new context, passphrase prompt, error message, file and folder choosers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractButton,
    QColorDialog,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..core.contexts import ExitDefault, Network, Profile
from ..core.guest import ClipboardPolicy
from ..core.images import RECIPES
from .widgets import add_ok_cancel


class NewContextDialog(QDialog):
    """Name, color, image, memory, network and clipboard policies, exit default, passphrase."""

    def __init__(self, built_images: list[str], parent: QWidget | None = None,
                 passphrase_supported: bool = True) -> None:
        super().__init__(parent)
        self.setWindowTitle("New context")
        form = QFormLayout(self)
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. banking")
        self.color = "#27ae60"
        self.color_button = QPushButton()
        self.color_button.clicked.connect(self._pick_color)
        self._show_color()
        self.image = QComboBox()
        # Built images first; recipes not built yet are offered too (built on first start).
        for name in built_images + [r for r in RECIPES if r not in built_images]:
            self.image.addItem(name if name in built_images else f"{name} (not built yet)", name)
        self.memory = QSpinBox()
        self.memory.setRange(0, 65536)
        self.memory.setSingleStep(256)
        self.memory.setSpecialValueText("image default")
        self.memory.setSuffix(" MiB")
        self.network = QComboBox()
        for n in Network:
            self.network.addItem(n.value, n)
        self.on_exit = QComboBox()
        for e in ExitDefault:
            self.on_exit.addItem(e.value, e)
        self.clipboard = QComboBox()
        for label, policy in (("off", ClipboardPolicy.OFF),
                              ("host → guest only", ClipboardPolicy.HOST_TO_GUEST),
                              ("both ways", ClipboardPolicy.BOTH)):
            self.clipboard.addItem(label, policy)
        self.clipboard.setCurrentIndex(self.clipboard.findData(ClipboardPolicy.HOST_TO_GUEST))
        self.clipboard.setToolTip("Which way clipboard text may be copied; it is only ever "
                                  "copied when you ask (Ctrl+Shift+V / Ctrl+Shift+C)")
        self.passphrase = QLineEdit()
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        self.passphrase.setPlaceholderText(
            "optional: asked at each start" if passphrase_supported else "not available")
        self.passphrase.setEnabled(passphrase_supported)
        self.passphrase_again = QLineEdit()  # a typo would lock the context for good
        self.passphrase_again.setObjectName("passphraseAgain")
        self.passphrase_again.setEchoMode(QLineEdit.EchoMode.Password)
        self.passphrase_again.setEnabled(passphrase_supported)
        self.mismatch = QLabel("")
        self.mismatch.setObjectName("passphraseMismatch")
        for label, widget in (("Name", self.name), ("Frame color", self.color_button),
                              ("Image", self.image), ("Memory", self.memory),
                              ("Network", self.network), ("Clipboard", self.clipboard),
                              ("When a session ends", self.on_exit),
                              ("Passphrase", self.passphrase),
                              ("Repeat passphrase", self.passphrase_again), ("", self.mismatch)):
            form.addRow(label, widget)
        add_ok_cancel(form, self)

    def accept(self) -> None:
        if self.passphrase.text() != self.passphrase_again.text():
            self.mismatch.setText("The two passphrases differ.")
            self.passphrase_again.setFocus()
            return
        super().accept()

    def _pick_color(self) -> None:
        c = QColorDialog.getColor(QColor(self.color), self, "Frame color")
        if c.isValid():
            self.color = c.name()
            self._show_color()

    def _show_color(self) -> None:
        self.color_button.setText(self.color)
        self.color_button.setStyleSheet(f"background:{self.color};")

    def profile(self) -> Profile:
        """The profile as entered (``ContextStore.create`` validates it)."""
        return Profile(
            name=self.name.text().strip(), image=str(self.image.currentData()),
            color=self.color, memory_mib=self.memory.value() or None,
            network=self.network.currentData(), on_exit=self.on_exit.currentData(),
            clipboard=self.clipboard.currentData(),
        )


def choose_directory(parent: QWidget | None, title: str, start: Path,
                     on_chosen: Callable[[Path], object]) -> QFileDialog:
    """A non-blocking folder chooser opened at ``start``; ``on_chosen`` gets the folder."""
    dialog = QFileDialog(parent, title, str(start))
    dialog.setObjectName("chooseDirectory")
    dialog.setFileMode(QFileDialog.FileMode.Directory)
    dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
    dialog.fileSelected.connect(lambda folder: on_chosen(Path(folder)))
    dialog.finished.connect(dialog.deleteLater)
    dialog.open()
    return dialog


def choose_files(parent: QWidget | None, title: str,
                 on_chosen: Callable[[list[Path]], object]) -> QFileDialog:
    """A non-blocking chooser of existing files; ``on_chosen`` gets them."""
    dialog = QFileDialog(parent, title, str(Path.home()))
    dialog.setObjectName("chooseFiles")
    dialog.setFileMode(QFileDialog.FileMode.ExistingFiles)
    dialog.filesSelected.connect(lambda files: on_chosen([Path(f) for f in files]))
    dialog.finished.connect(dialog.deleteLater)
    dialog.open()
    return dialog


def ask_passphrase(context: str, parent: QWidget | None = None) -> str | None:
    """The passphrase of a protected context, or None if the user cancelled."""
    text, ok = QInputDialog.getText(parent, "Blank Slate", f"Passphrase for “{context}”:",
                                    QLineEdit.EchoMode.Password)
    return text if ok else None


def ask_resume(context: str, on_choice: Callable[[bool], object],
               parent: QWidget | None = None) -> QMessageBox:
    """A context has a suspended session: Resume it (True), Discard it (False), or neither."""
    box = QMessageBox(QMessageBox.Icon.Question, "Blank Slate",
                      f"“{context}” has a suspended session.", QMessageBox.StandardButton.Cancel,
                      parent)
    box.setObjectName("askResume")
    box.setInformativeText("Resume it where it was, or discard it (securely erased) and "
                           "start a clean session?")
    resume = box.addButton("Resume", QMessageBox.ButtonRole.AcceptRole)
    discard = box.addButton("Discard", QMessageBox.ButtonRole.DestructiveRole)
    box.setDefaultButton(resume)

    def chosen() -> None:
        if box.clickedButton() is resume:
            on_choice(True)
        elif box.clickedButton() is discard:
            on_choice(False)

    box.finished.connect(chosen)
    box.open()
    return box


def show_error(message: str, parent: QWidget | None = None) -> QMessageBox:
    """A short, non-blocking error box (a user-facing one-liner, never a traceback)."""
    box = QMessageBox(QMessageBox.Icon.Warning, "Blank Slate", message,
                      QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("errorBox")
    box.open()
    return box


def ask(parent: QWidget | None, title: str, text: str, on_yes: Callable[[], object],
        *, name: str = "question", default_no: bool = True) -> QMessageBox:
    """A non-blocking Yes/No question; ``on_yes`` runs only if the user says Yes.

    Non-blocking (``open()``, not ``exec()``) so the asyncio jobs keep running meanwhile.
    """
    yes, no = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
    box = QMessageBox(QMessageBox.Icon.Question, title, text, yes | no, parent)
    box.setObjectName(name)
    box.setDefaultButton(no if default_no else yes)

    def clicked(button: QAbstractButton) -> None:
        if box.standardButton(button) == yes:
            on_yes()

    box.buttonClicked.connect(clicked)
    box.finished.connect(box.deleteLater)
    box.open()
    return box

"""A context's Settings… dialog: name, color, memory, network, DNS, clipboard policy, where
downloads go, search, exit default and passphrase, checked before OK; the app applies them
(``settings_requested``).

A running session goes on as it started: the changes apply from its next session, and the
dialog says so. A running context cannot be renamed (its files are in use).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..core.contexts import DownloadsTo, ExitDefault, Network, Profile
from ..core.errors import UsageError
from ..core.guest import ClipboardPolicy
from ..core.storage import validate_name
from .widgets import add_ok_cancel

NETWORK_LABELS = {Network.INTERNET: "internet only",
                  Network.INTERNET_LAN: "internet and local network",
                  Network.NONE: "no network"}
DOWNLOADS_LABELS = {DownloadsTo.SESSION: "the session (thrown away unless moved or saved)",
                    DownloadsTo.PERSISTENT: "the persistent folder (Persistent/Downloads)"}
CLIPBOARD_LABELS = {ClipboardPolicy.OFF: "off",
                    ClipboardPolicy.HOST_TO_GUEST: "host → guest only",
                    ClipboardPolicy.BOTH: "both ways"}


@dataclass(frozen=True)
class SettingsChange:
    """What the user asked for: the new settings (``profile``, still under the old name),
    the new name, and a passphrase change (``new_passphrase`` None: unchanged; "": remove).
    ``passphrase`` is the current one, for a protected context."""

    name: str
    profile: Profile
    new_name: str
    passphrase: str | None = None
    new_passphrase: str | None = None


class ContextSettingsDialog(QDialog):
    def __init__(self, profile: Profile, *, protected: bool, running: bool,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("contextSettings")
        self.setWindowTitle(f"Settings of “{profile.name}”")
        self.original = profile
        self.protected = protected
        form = QFormLayout(self)
        self.note = QLabel(f"“{profile.name}” is running: the changes apply from its next "
                           "session." if running else "")
        self.note.setObjectName("runningNote")
        self.note.setWordWrap(True)
        self.note.setVisible(running)
        form.addRow(self.note)
        self.name = QLineEdit(profile.name)
        if running:
            self.name.setEnabled(False)
            self.name.setToolTip("Stop the session to rename the context")
        self.color = profile.color
        self.color_button = QPushButton()
        self.color_button.clicked.connect(self._pick_color)
        self._show_color()
        self.memory = QSpinBox()
        self.memory.setRange(0, 65536)
        self.memory.setSingleStep(256)
        self.memory.setSpecialValueText("image default")
        self.memory.setSuffix(" MiB")
        self.memory.setValue(profile.memory_mib or 0)
        self.network = _combo(NETWORK_LABELS, profile.network)
        self.dns = QLineEdit(", ".join(profile.dns) or "host")
        self.dns.setToolTip("“host”: this computer's resolvers; or up to three IP addresses, "
                            "separated by commas")
        self.clipboard = _combo(CLIPBOARD_LABELS, profile.clipboard)
        self.on_exit = _combo({e: e.value for e in ExitDefault}, profile.on_exit)
        self.downloads = _combo(DOWNLOADS_LABELS, profile.downloads)
        self.downloads.setEnabled(profile.data_mib > 0)  # no folder, nowhere else to go
        self.search = QLineEdit(profile.search)
        self.search.setToolTip("Where the address bar sends words: %s is replaced by them")
        self.passphrase = QLineEdit()
        self.passphrase.setObjectName("currentPassphrase")
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        self.passphrase.setPlaceholderText("needed to rename or change it" if protected
                                           else "none set")
        self.passphrase.setEnabled(protected)
        self.change_passphrase = QCheckBox("Set a new passphrase" if not protected
                                           else "Change or remove the passphrase")
        self.new_passphrase = QLineEdit()
        self.new_passphrase.setObjectName("newPassphrase")
        self.new_passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        self.new_passphrase.setPlaceholderText("empty: no passphrase" if protected else "")
        self.new_again = QLineEdit()
        self.new_again.setObjectName("newPassphraseAgain")
        self.new_again.setEchoMode(QLineEdit.EchoMode.Password)
        for field in (self.new_passphrase, self.new_again):
            field.setEnabled(False)
            self.change_passphrase.toggled.connect(field.setEnabled)
        self.problem = QLabel("")
        self.problem.setObjectName("settingsProblem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color:#c0392b;")
        for label, widget in (("Name", self.name), ("Frame color", self.color_button),
                              ("Memory", self.memory), ("Network", self.network),
                              ("DNS", self.dns), ("Clipboard", self.clipboard),
                              ("When a session ends", self.on_exit),
                              ("Downloads go to", self.downloads), ("Search", self.search),
                              ("Passphrase", self.passphrase), ("", self.change_passphrase),
                              ("New passphrase", self.new_passphrase),
                              ("Repeat it", self.new_again), ("", self.problem)):
            form.addRow(label, widget)
        add_ok_cancel(form, self)

    def _pick_color(self) -> None:
        c = QColorDialog.getColor(QColor(self.color), self, "Frame color")
        if c.isValid():
            self.set_color(c.name())

    def set_color(self, color: str) -> None:
        self.color = color
        self._show_color()

    def _show_color(self) -> None:
        self.color_button.setText(self.color)
        self.color_button.setStyleSheet(f"background:{self.color};")

    def profile(self) -> Profile:
        """The settings as entered, under the context's current name (not validated)."""
        dns = self.dns.text().strip()
        return dataclasses.replace(
            self.original, color=self.color, memory_mib=self.memory.value() or None,
            network=self.network.currentData(), on_exit=self.on_exit.currentData(),
            clipboard=self.clipboard.currentData(), downloads=self.downloads.currentData(),
            dns=() if dns in ("", "host") else tuple(dns.split(",")),
            search=self.search.text().strip())

    def change(self) -> SettingsChange:
        return SettingsChange(
            self.original.name, self.profile().validate(), self.name.text().strip(),
            self.passphrase.text() or None,
            self.new_passphrase.text() if self.change_passphrase.isChecked() else None)

    def check(self) -> str | None:
        """What is wrong with the entries (one line), or None."""
        try:
            validate_name(self.name.text().strip(), "context name")
            self.profile().validate()
        except UsageError as exc:
            return str(exc)
        changing = self.change_passphrase.isChecked()
        if changing and self.new_passphrase.text() != self.new_again.text():
            return "The two new passphrases differ."
        if changing and not self.protected and not self.new_passphrase.text():
            return "Type the new passphrase (twice)."
        renaming = self.name.text().strip() != self.original.name
        if self.protected and (renaming or changing) and not self.passphrase.text():
            return "Type the current passphrase to rename the context or change it."
        return None

    def accept(self) -> None:
        problem = self.check()
        if problem is not None:
            self.problem.setText(problem)
            return
        super().accept()


def _combo(labels: Mapping[Any, str], current: object) -> QComboBox:
    box = QComboBox()
    for value, label in labels.items():
        box.addItem(label, value)
    box.setCurrentIndex(box.findData(current))
    return box

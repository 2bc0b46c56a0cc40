"""The launcher's cards, a context's Settings… dialog and the tray's notifications, driven
through the real widgets (Qt offscreen); one test ends real tiny-guest sessions."""

from __future__ import annotations

import os
from typing import Any

import pytest
import test_gui

os.environ["QT_QPA_PLATFORM"] = "offscreen"

from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QWidget
from test_gui import Gui, ends_clean, wait_until

from sandbox_app.core.contexts import (
    ContextStore,
    DownloadsTo,
    ExitDefault,
    Network,
    Profile,
    key_store,
)
from sandbox_app.core.guest import ClipboardPolicy
from sandbox_app.core.session import RunState
from sandbox_app.core.storage import Paths
from sandbox_app.gui import asyncbridge
from sandbox_app.gui.launcher import LauncherWindow
from sandbox_app.gui.session_window import SessionWindow
from sandbox_app.gui.settings_dialog import ContextSettingsDialog, SettingsChange
from sandbox_app.gui.signals import AppSignals

pytestmark = pytest.mark.timeout(240)
loop, gui = test_gui.loop, test_gui.gui  # the app's fixtures (qasync loop, tiny context)


class Views:
    """All the views need of the app (``gui.protocols.AppState``), state set by the test."""

    def __init__(self, paths: Paths) -> None:
        self.signals, self.paths, self.jobs = AppSignals(), paths, asyncbridge.JobRunner()
        self.states: dict[str, RunState] = {}

    def state(self, name: str) -> RunState:
        return self.states.get(name, RunState.STOPPED)

    def warnings(self, name: str) -> list[str]:
        return []

    def image_note(self, context: object) -> str:
        return ""

    def running(self) -> list[str]:
        return [n for n, s in self.states.items() if s is not RunState.STOPPED]


@pytest.fixture
def views(paths: Paths) -> Views:
    store = ContextStore(paths)
    for name, color in (("alpha", "#c0392b"), ("beta", "#27ae60"), ("gamma", "#2e86de")):
        store.create(Profile(name=name, image="tiny", color=color))
    return Views(paths)


# ---------------------------------------------------------------------------- cards


def test_one_card_per_context_with_its_color_and_a_start_button(qtbot: Any,
                                                                 views: Views) -> None:
    launcher = LauncherWindow(views)
    qtbot.addWidget(launcher)
    assert list(launcher.cards) == ["alpha", "beta", "gamma"]
    card = launcher.card("beta")
    assert "#27ae60" in card.stripe.styleSheet() and "#27ae60" in card.start_button.styleSheet()
    assert card.start_button.text() == "Start" and card.start_button.minimumHeight() >= 40
    assert "tiny (not built yet)" in card.details.text() and "never kept" in card.details.text()
    started: list[str] = []
    views.signals.open_requested.connect(started.append)
    card.start_button.click()
    assert started == ["beta"]


def test_arrow_keys_move_between_cards_and_enter_starts(qtbot: Any, views: Views) -> None:
    launcher = LauncherWindow(views)
    qtbot.addWidget(launcher)
    launcher.show()
    started: list[str] = []
    views.signals.open_requested.connect(started.append)
    launcher.select("alpha")
    QTest.keyClick(launcher.card("alpha"), Qt.Key.Key_Down)
    assert launcher.selected() == "beta" and launcher.card("beta").property("selected")
    assert not launcher.card("alpha").property("selected")
    QTest.keyClick(launcher.card("beta"), Qt.Key.Key_Down)
    QTest.keyClick(launcher.card("gamma"), Qt.Key.Key_Down)  # the last: stays
    QTest.keyClick(launcher.card("gamma"), Qt.Key.Key_Up)
    assert launcher.selected() == "beta"
    QTest.keyClick(launcher.card("beta"), Qt.Key.Key_Return)
    assert started == ["beta"]
    # Tab goes from a card's last button to the next card.
    assert launcher.card("alpha").buttons["Remove…"].nextInFocusChain() is not None
    views.states["beta"] = RunState.STARTING  # busy: Enter does nothing
    launcher.refresh()
    QTest.keyClick(launcher.card("beta"), Qt.Key.Key_Enter)
    assert started == ["beta"]


def _lightness_at_card_background(launcher: LauncherWindow, name: str) -> int:
    card = launcher.card(name)
    image = card.grab().toImage()
    # Right of the text, left of the Start button: the card's own background.
    x = card.start_button.x() - 8
    return QColor(image.pixel(x, card.height() - 6)).lightness()


def test_cards_follow_the_system_palette_light_and_dark(qtbot: Any, views: Views,
                                                        qapp: QApplication) -> None:
    launcher = LauncherWindow(views)
    qtbot.addWidget(launcher)
    launcher.resize(700, 500)
    launcher.show()
    original = qapp.palette()
    try:
        light = QPalette(original)
        light.setColor(QPalette.ColorRole.Base, QColor("#ffffff"))
        light.setColor(QPalette.ColorRole.Window, QColor("#f0f0f0"))
        qapp.setPalette(light)
        qapp.processEvents()  # the palette change reaches the windows
        assert _lightness_at_card_background(launcher, "alpha") > 200
        dark = QPalette(original)
        dark.setColor(QPalette.ColorRole.Base, QColor("#1e1e1e"))
        dark.setColor(QPalette.ColorRole.Window, QColor("#2b2b2b"))
        dark.setColor(QPalette.ColorRole.Text, QColor("#eeeeee"))
        dark.setColor(QPalette.ColorRole.WindowText, QColor("#eeeeee"))
        qapp.setPalette(dark)
        qapp.processEvents()
        assert _lightness_at_card_background(launcher, "alpha") < 60
    finally:
        qapp.setPalette(original)


# ---------------------------------------------------------------------------- Settings…


def test_settings_button_opens_the_dialog_filled_in(qtbot: Any, views: Views) -> None:
    store = ContextStore(views.paths)
    store.update(Profile(name="beta", image="tiny", color="#27ae60", memory_mib=512,
                         network=Network.NONE, dns=("9.9.9.9",)))
    launcher = LauncherWindow(views)
    qtbot.addWidget(launcher)
    launcher.card("beta").buttons["Settings…"].click()
    dialog = launcher.findChild(ContextSettingsDialog, "contextSettings")
    assert dialog is not None and dialog.isVisible()
    assert dialog.name.text() == "beta" and dialog.color == "#27ae60"
    assert dialog.memory.value() == 512 and dialog.network.currentData() is Network.NONE
    assert dialog.dns.text() == "9.9.9.9" and not dialog.note.isVisibleTo(dialog)
    asked: list[SettingsChange] = []
    views.signals.settings_requested.connect(asked.append)
    dialog.set_color("#000080")
    dialog.network.setCurrentIndex(dialog.network.findData(Network.INTERNET_LAN))
    dialog.dns.setText("host")
    dialog.accept()
    assert len(asked) == 1 and asked[0].name == "beta" and asked[0].new_name == "beta"
    p = asked[0].profile
    assert (p.color, p.network, p.dns, p.memory_mib) == (
        "#000080", Network.INTERNET_LAN, (), 512)
    assert asked[0].new_passphrase is None


def test_settings_dialog_refuses_bad_entries_in_one_line(qtbot: Any) -> None:
    dialog = ContextSettingsDialog(Profile(name="c", image="tiny"), protected=False,
                                   running=False)
    qtbot.addWidget(dialog)
    dialog.show()
    for field, value, says in ((dialog.dns, "not-an-ip", "not an IP address"),
                               (dialog.name, "Bad Name", "invalid context name"),
                               (dialog.search, "ftp://x", "search must be")):
        original = field.text()
        field.setText(value)
        dialog.accept()
        assert dialog.isVisible() and says in dialog.problem.text()
        assert "\n" not in dialog.problem.text()
        field.setText(original)
    dialog.change_passphrase.setChecked(True)
    dialog.new_passphrase.setText("one")
    dialog.new_again.setText("two")
    dialog.accept()
    assert dialog.isVisible() and "differ" in dialog.problem.text()
    dialog.new_again.setText("one")
    dialog.accept()
    assert not dialog.isVisible()


def test_settings_of_a_running_context_apply_next_time_and_it_cannot_be_renamed(
        qtbot: Any) -> None:
    dialog = ContextSettingsDialog(Profile(name="c", image="tiny"), protected=True,
                                   running=True)
    qtbot.addWidget(dialog)
    assert "next session" in dialog.note.text() and dialog.note.isVisibleTo(dialog)
    assert not dialog.name.isEnabled()
    dialog.change_passphrase.setChecked(True)  # protected: the current one is needed
    assert "current passphrase" in (dialog.check() or "")


def test_the_app_applies_settings_rename_and_passphrase(gui: Gui) -> None:
    dialog = gui.launcher.open_settings("t1")
    assert dialog is not None
    dialog.name.setText("renamed")
    dialog.on_exit.setCurrentIndex(dialog.on_exit.findData(ExitDefault.DISCARD))
    dialog.clipboard.setCurrentIndex(dialog.clipboard.findData(ClipboardPolicy.BOTH))
    dialog.memory.setValue(256)
    dialog.downloads.setCurrentIndex(dialog.downloads.findData(DownloadsTo.PERSISTENT))
    dialog.change_passphrase.setChecked(True)
    dialog.new_passphrase.setText("s3cret")
    dialog.new_again.setText("s3cret")
    dialog.accept()
    wait_until(lambda: "renamed" in gui.launcher.cards, 30)
    assert "t1" not in gui.launcher.cards
    p = ContextStore(gui.app.paths).get("renamed").profile
    assert (p.on_exit, p.clipboard, p.memory_mib, p.color, p.downloads) == (
        ExitDefault.DISCARD, ClipboardPolicy.BOTH, 256, "#112233", DownloadsTo.PERSISTENT)
    assert key_store(gui.app.paths).is_protected("renamed")
    assert gui.launcher.card("renamed").lock_label.isVisibleTo(gui.launcher.card("renamed"))
    gui.close()


# ---------------------------------------------------------------------------- notifications


@ends_clean
def test_the_tray_notifies_when_a_keep_or_an_erase_ends(gui: Gui) -> None:
    shown: list[tuple[str, str]] = []
    gui.tray.icon.showMessage = lambda title, text, *_a: shown.append((title, text))
    store = ContextStore(gui.app.paths)
    profile = store.get("t1").profile
    profile.on_exit = ExitDefault.KEEP
    store.update(profile)
    gui.start()
    gui.app.windows["t1"].stop_action.trigger()
    wait_until(gui.ended)
    wait_until(lambda: bool(shown), 10)
    assert shown[-1][0] == "“t1” kept" and "next session starts from here" in shown[-1][1]
    profile.on_exit = ExitDefault.DISCARD
    store.update(profile)
    gui.start()
    gui.app.windows["t1"].stop_action.trigger()
    wait_until(gui.ended)
    wait_until(lambda: len(shown) == 2, 10)
    assert shown[-1][0] == "“t1” erased" and "securely erased" in shown[-1][1]


def test_the_tray_notifies_when_an_image_build_fails(gui: Gui) -> None:
    shown: list[tuple[str, str]] = []
    gui.tray.icon.showMessage = lambda title, text, *_a: shown.append((title, text))
    job = gui.app.build_image("no-such-image")
    wait_until(job.done, 30)
    assert shown and shown[-1][0] == "Building “no-such-image” failed"
    gui.close()


# ---------------------------------------------------------------------------- session window


def _session_window(qtbot: Any, client: Any, state: QSettings | None = None) -> SessionWindow:
    window = SessionWindow("c", "#123456", client, AppSignals(), window_state=state)
    qtbot.addWidget(window)
    return window


def test_f11_toggles_full_screen(qtbot: Any) -> None:
    client = test_gui._FakeClient()
    window = _session_window(qtbot, client)
    window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)  # shortcuts go to the active window
    QTest.keyClick(window.display, Qt.Key.Key_F11)
    assert window.windowState() & Qt.WindowState.WindowFullScreen
    assert window.fullscreen_action.isChecked()
    QTest.keyClick(window.display, Qt.Key.Key_F11)
    assert not window.windowState() & Qt.WindowState.WindowFullScreen
    assert not window.fullscreen_action.isChecked()
    assert client.keys == []  # F11 is the window's, not the guest's


def test_a_click_grabs_the_keyboard_for_the_guest_until_ctrl_alt(qtbot: Any) -> None:
    client = test_gui._FakeClient()
    window = _session_window(qtbot, client)
    window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    display = window.display
    QTest.mouseClick(display, Qt.MouseButton.LeftButton, pos=QPoint(10, 10))
    assert display.grabbed and QWidget.keyboardGrabber() is display
    assert window.grab_hint.isVisibleTo(window)
    QTest.keyClick(display, Qt.Key.Key_F11)  # the window's shortcut: now the guest's key
    assert not window.windowState() & Qt.WindowState.WindowFullScreen
    assert (0xFFC8, True, 0x57) in client.keys  # F11 down, to the guest
    # Ctrl+Alt+Del stays the guest's and keeps the grab.
    ctrl, alt = Qt.KeyboardModifier.ControlModifier, Qt.KeyboardModifier.AltModifier
    QTest.keyPress(display, Qt.Key.Key_Control, ctrl)
    QTest.keyPress(display, Qt.Key.Key_Alt, ctrl | alt)
    QTest.keyClick(display, Qt.Key.Key_Delete, ctrl | alt)
    QTest.keyRelease(display, Qt.Key.Key_Alt, ctrl)
    QTest.keyRelease(display, Qt.Key.Key_Control)
    assert display.grabbed
    # Ctrl+Alt alone releases it; the shortcut is the window's again.
    QTest.keyPress(display, Qt.Key.Key_Control, ctrl)
    QTest.keyPress(display, Qt.Key.Key_Alt, ctrl | alt)
    QTest.keyRelease(display, Qt.Key.Key_Alt, ctrl)
    QTest.keyRelease(display, Qt.Key.Key_Control)
    assert not display.grabbed and QWidget.keyboardGrabber() is None
    assert not window.grab_hint.isVisibleTo(window)
    client.keys.clear()
    QTest.keyClick(display, Qt.Key.Key_F11)
    assert window.windowState() & Qt.WindowState.WindowFullScreen
    assert client.keys == []
    # Focus elsewhere gives the keyboard back too.
    QTest.mouseClick(display, Qt.MouseButton.LeftButton, pos=QPoint(10, 10))
    assert display.grabbed
    display.clearFocus()
    qtbot.waitUntil(lambda: not display.grabbed)


def test_send_keys_menu_sends_the_chords_to_the_guest(qtbot: Any) -> None:
    client = test_gui._FakeClient()
    window = _session_window(qtbot, client)
    actions = {a.text(): a for a in window.send_keys_menu.actions()}
    assert list(actions) == ["Ctrl+Alt+Del"] + [f"Ctrl+Alt+F{n}" for n in range(1, 13)]
    actions["Ctrl+Alt+Del"].trigger()
    # Ctrl, Alt, Delete down (QEMU qnums 0x1d, 0x38, 0xd3), then up in reverse.
    assert client.keys == [(0xFFE3, True, 0x1D), (0xFFE9, True, 0x38), (0xFFFF, True, 0xD3),
                           (0xFFFF, False, 0xD3), (0xFFE9, False, 0x38), (0xFFE3, False, 0x1D)]
    client.keys.clear()
    actions["Ctrl+Alt+F2"].trigger()
    assert client.keys[2] == (0xFFBF, True, 0x3C)  # F2
    client.keys.clear()
    actions["Ctrl+Alt+F12"].trigger()
    assert client.keys[2] == (0xFFC9, True, 0x58)  # F12


def test_a_context_window_reopens_where_it_was(qtbot: Any, paths: Paths) -> None:
    state = QSettings(str(paths.config / "windows.ini"), QSettings.Format.IniFormat)
    first = _session_window(qtbot, test_gui._FakeClient(), state)
    first.show()
    first.setGeometry(40, 30, 520, 380)  # the offscreen screen is 800x600
    first.close_for_real()
    assert (paths.config / "windows.ini").exists()
    again = QSettings(str(paths.config / "windows.ini"), QSettings.Format.IniFormat)
    second = _session_window(qtbot, test_gui._FakeClient(), again)
    second.show()
    assert (second.width(), second.height()) == (520, 380)
    assert (second.geometry().x(), second.geometry().y()) == (40, 30)
    other = SessionWindow("d", "#123456", test_gui._FakeClient(),  # type: ignore[arg-type]
                          AppSignals(), window_state=again)
    qtbot.addWidget(other)
    assert (other.width(), other.height()) != (520, 380)  # per context

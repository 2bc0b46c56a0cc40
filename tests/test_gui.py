"""The desktop app, driven through its real widgets: real Qt (offscreen), real QEMU (tiny guest).

Waiting is done the way the app runs: on asyncbridge's qasync loop, which also processes Qt
events, so jobs, the RFB client and the widgets all make progress while a test waits.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"

from PySide6.QtCore import QCoreApplication, QEvent, QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFrame, QMenu, QMessageBox, QWidget

from sandbox_app.core.contexts import ContextStore, ExitDefault, Network
from sandbox_app.core.session import RunState
from sandbox_app.core.storage import Paths
from sandbox_app.gui import asyncbridge
from sandbox_app.gui.app import App
from sandbox_app.gui.display import VmDisplay
from sandbox_app.gui.launcher import LauncherWindow
from sandbox_app.gui.tray import Tray

pytestmark = pytest.mark.timeout(240)
WAIT_S = 90.0


def wait_until(cond: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Run the qasync loop (and with it Qt) until ``cond()`` holds."""

    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.05)

    asyncbridge.complete(poll(), timeout)


class Gui:
    """The app as ``main()`` assembles it, minus the quit latch."""

    def __init__(self, paths: Paths) -> None:
        self.app = App(paths)
        self.launcher = LauncherWindow(self.app, has_tray=True)
        self.tray = Tray(self.app)
        self.launcher.show()
        self.closed = False

    def guest(self, name: str, command: str) -> str:
        session = self.app.runners[name].session
        assert session is not None
        result = asyncbridge.complete(session.exec(command), 60)
        return result.stdout.decode()

    def start(self, name: str = "t1") -> None:
        self.launcher.card(name).buttons["Start"].click()
        wait_until(lambda: name in self.app.windows and name in self.app.displays)

    def display(self, name: str = "t1") -> VmDisplay:
        return self.app.windows[name].display

    def ended(self, name: str = "t1") -> bool:
        return self.app.state(name) is RunState.STOPPED and name not in self.app.windows

    def close(self) -> None:
        """Discard every session and wait for every job, on the loop (idempotent)."""
        if self.closed:
            return
        self.closed = True
        asyncbridge.complete(self.app.shutdown(), 120)
        self.tray.hide()
        self.launcher.hide()
        self.launcher.deleteLater()


def ends_clean(test: Callable[..., None]) -> Callable[..., None]:
    """Shut the app down inside the test, on the qasync loop.

    pytest-qt processes Qt events right after a test's call phase, outside the asyncio
    loop; a background task (say, preparing the next overlay) stepping then would find no
    running loop. Ending every job before the call phase ends leaves nothing to step.
    """

    @functools.wraps(test)
    def wrapper(gui: Gui, *args: Any, **kwargs: Any) -> None:
        try:
            test(gui, *args, **kwargs)
        finally:
            gui.close()

    return wrapper


@pytest.fixture
def loop(qapp: QApplication) -> Iterator[Any]:
    lp = asyncbridge.install_loop(qapp)
    yield lp
    # This test's deferred deletes (windows, dialogs) happen now, with the loop alive, not
    # in pytest-qt's processEvents() during some later test.
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    asyncbridge.complete(asyncio.sleep(0.01), 5)  # the rest, with the loop running
    lp.close()


@pytest.fixture
def gui(tiny_paths: Paths, tiny_context: str, loop: Any) -> Iterator[Gui]:
    g = Gui(tiny_paths)
    yield g
    g.close()


def non_uniform(display: VmDisplay) -> bool:
    """True once the guest's screen shows anything but one flat color (a console's text)."""
    img = display.grab_guest()
    if img.isNull():
        return False
    data = bytes(img.constBits())
    return data.count(data[:4]) * 4 != len(data)


# ---------------------------------------------------------------------------- no VM needed


def test_launcher_lists_contexts_and_warns_without_kvm(gui: Gui) -> None:
    card = gui.launcher.card("t1")
    assert card.name_label.text() == "t1" and card.state_label.text() == "stopped"
    details = card.details.text()
    assert details.startswith("tiny · built ") and "ago" in details and "never kept" in details
    assert "#112233" in card.stripe.styleSheet()
    gui.app.probe_accel()
    wait_until(lambda: gui.launcher.banner.isVisibleTo(gui.launcher), 30)  # ACCEL=tcg here
    assert "TCG" in gui.launcher.banner.text()


def test_new_context_dialog_creates_the_context(gui: Gui) -> None:
    dialog = gui.launcher.new_context()
    QTest.keyClicks(dialog.name, "bank")
    dialog.image.setCurrentIndex(dialog.image.findData("tiny"))
    dialog.network.setCurrentIndex(dialog.network.findData(Network.NONE))
    dialog.on_exit.setCurrentIndex(dialog.on_exit.findData(ExitDefault.DISCARD))
    dialog.accept()
    profile = ContextStore(gui.app.paths).get("bank").profile
    assert (profile.image, profile.network, profile.on_exit) == (
        "tiny", Network.NONE, ExitDefault.DISCARD)
    assert "bank" in gui.launcher.cards


def test_remove_context_asks_then_erases(gui: Gui) -> None:
    gui.launcher.card("t1").buttons["Remove…"].click()
    box = gui.launcher.findChild(QMessageBox, "confirmRemove")
    assert box is not None and "t1" in box.text()
    box.button(QMessageBox.StandardButton.Yes).click()
    wait_until(lambda: "t1" not in [c.name for c in ContextStore(gui.app.paths).list()], 30)
    assert not (gui.app.paths.contexts_data / "t1").exists()


class _FakeClient:
    """Records what the display widget sends (for the key mapping, no VM needed)."""

    width, height = 640, 400
    framebuffer = bytearray(640 * 400 * 4)

    def __init__(self) -> None:
        self.keys: list[tuple[int, bool, int | None]] = []
        self.pointer: list[tuple[int, int, int]] = []

    def key_event(self, keysym: int, down: bool, scancode: int | None = None) -> None:
        self.keys.append((keysym, down, scancode))

    def pointer_event(self, x: int, y: int, buttons: int) -> None:
        self.pointer.append((x, y, buttons))

    def set_desktop_size(self, w: int, h: int) -> bool:
        return False


def test_display_sends_scancodes_with_the_modifiers_the_event_carries(qtbot: Any) -> None:
    client = _FakeClient()
    display = VmDisplay(client)  # type: ignore[arg-type]
    qtbot.addWidget(display)
    display.resize(640, 400)
    QTest.keyClick(display, Qt.Key.Key_Greater, Qt.KeyboardModifier.NoModifier, 0)
    # '>' is Shift+'.' (scancode 0x34): Shift goes down around it.
    assert client.keys == [(0xFFE1, True, 0x2A), (ord(">"), True, 0x34),
                           (ord(">"), False, 0x34), (0xFFE1, False, 0x2A)]
    client.keys.clear()
    QTest.keyClick(display, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    assert client.keys[0] == (0xFFE3, True, 0x1D) and client.keys[-1] == (0xFFE3, False, 0x1D)
    assert (ord("c"), True, 0x2E) in client.keys
    QTest.mouseClick(display, Qt.MouseButton.LeftButton, pos=QPoint(320, 200))
    assert client.pointer[-2] == (320, 200, 1) and client.pointer[-1] == (320, 200, 0)


# ---------------------------------------------------------------------------- real QEMU


@ends_clean
def test_start_shows_guest_pixels_in_a_frame_of_the_context_color(gui: Gui) -> None:
    gui.start()
    window = gui.app.windows["t1"]
    assert window.isVisible() and "t1" in window.windowTitle()
    assert window.label.text().startswith("t1") and window.label.isVisible()
    frame = window.findChild(QFrame, "sessionFrame")
    assert frame is not None and "#112233" in frame.styleSheet()
    wait_until(lambda: non_uniform(gui.display()))
    assert gui.app.state("t1") is RunState.RUNNING


@ends_clean
def test_keys_typed_into_the_display_reach_the_guest(gui: Gui) -> None:
    gui.start()
    display = gui.display()
    wait_until(lambda: non_uniform(display))
    QTest.keyClicks(display, "echo typed > /root/k")
    QTest.keyClick(display, Qt.Key.Key_Return)
    deadline = time.monotonic() + 30
    while gui.guest("t1", "cat /root/k 2>/dev/null") != "typed\n":
        assert time.monotonic() < deadline, "the typed command never ran in the guest"
        asyncbridge.complete(asyncio.sleep(0.3))


def _close_and_answer(gui: Gui, button: str) -> None:
    gui.app.windows["t1"].close()  # like the title bar's close box: asks first
    wait_until(lambda: "t1" in gui.app.exit_dialogs)
    dialog = gui.app.exit_dialogs["t1"]
    assert dialog.isVisible() and "changed" in dialog.details.text()
    chosen = {"keep": dialog.keep_button, "discard": dialog.discard_button,
              "cancel": dialog.cancel_button}[button]
    wait_until(chosen.isEnabled)  # Discard waits for the unsaved-downloads check
    chosen.click()


@ends_clean
def test_exit_dialog_cancel_leaves_the_session_running(gui: Gui) -> None:
    gui.start()
    _close_and_answer(gui, "cancel")
    wait_until(lambda: "t1" not in gui.app.exit_dialogs)
    assert gui.app.state("t1") is RunState.RUNNING and gui.app.windows["t1"].isVisible()
    assert gui.guest("t1", "echo alive") == "alive\n"


@ends_clean
def test_exit_dialog_keep_then_discard(gui: Gui) -> None:
    gui.start()
    gui.guest("t1", "echo kept > /root/kept; sync")
    _close_and_answer(gui, "keep")
    wait_until(gui.ended)
    assert ContextStore(gui.app.paths).get("t1").manifest().kept_at is not None
    gui.start()
    assert gui.guest("t1", "cat /root/kept") == "kept\n"
    gui.guest("t1", "echo gone > /root/gone; sync")
    _close_and_answer(gui, "discard")
    wait_until(gui.ended)
    gui.start()
    assert gui.guest("t1", "cat /root/kept; test -e /root/gone || echo no-gone") == (
        "kept\nno-gone\n")


@ends_clean
def test_exit_default_discard_ends_without_asking(gui: Gui) -> None:
    store = ContextStore(gui.app.paths)
    profile = store.get("t1").profile
    profile.on_exit = ExitDefault.DISCARD
    store.save(profile)
    gui.start()
    gui.app.windows["t1"].stop_action.trigger()
    assert "t1" not in gui.app.exit_dialogs
    wait_until(gui.ended)


@ends_clean
def test_tray_quick_reset_gives_a_session_without_the_old_files(gui: Gui) -> None:
    gui.start()
    gui.guest("t1", "echo old > /root/old; sync")
    first = gui.app.runners["t1"].session
    wait_until(lambda: gui.app.runners["t1"].spare_ready, 60)  # overlay (or standby) prepared
    gui.tray.menu.aboutToShow.emit()  # what opening the tray menu does
    menu = gui.tray.context_menu("t1")
    assert menu is not None
    next(a for a in menu.actions() if a.text() == "Quick reset").trigger()
    wait_until(lambda: gui.app.runners["t1"].session not in (None, first)
               and gui.app.state("t1") is RunState.RUNNING and "t1" in gui.app.displays)
    assert gui.guest("t1", "test -e /root/old || echo clean") == "clean\n"
    assert "t1" in gui.app.windows and gui.app.windows["t1"].isVisible()
    reset_s = gui.app.runners["t1"].last_reset_s
    assert reset_s is not None
    print(f"quick reset (with a prepared overlay): {reset_s:.2f} s")
    wait_until(lambda: non_uniform(gui.display()))


@ends_clean
def test_quit_with_a_running_session_asks_first(gui: Gui) -> None:
    gui.start()
    quit_now: list[bool] = []
    from sandbox_app.gui.app import confirm_quit  # noqa: PLC0415

    confirm_quit(gui.app, gui.launcher, lambda: quit_now.append(True))
    box = gui.launcher.findChild(QMessageBox, "confirmQuit")
    assert box is not None and "t1" in box.text() and not quit_now
    box.button(QMessageBox.StandardButton.No).click()
    assert not quit_now and gui.app.state("t1") is RunState.RUNNING


def test_pyside_keeps_its_references_to_none(qtbot: Any) -> None:
    # PySide6 6.12.0 under Python 3.11 dropped a reference to None per call returning None
    # (and to True per emit): the app aborted after ~10k repaints. pyproject pins it out.
    widget = QWidget()
    qtbot.addWidget(widget)
    before = sys.getrefcount(None)
    for _ in range(2000):
        widget.update(0, 0, 1, 1)
    assert sys.getrefcount(None) >= before - 10


def test_actions_for_each_run_state() -> None:
    from sandbox_app.gui.actions import Action, actions_for  # noqa: PLC0415

    assert actions_for(RunState.STOPPED) == {Action.OPEN, Action.QUICK_RESET, Action.REMOVE,
                                             Action.SETTINGS}
    assert actions_for(RunState.RUNNING) == {Action.OPEN, Action.QUICK_RESET, Action.STOP,
                                             Action.SETTINGS}
    for busy in (RunState.STARTING, RunState.KEEPING, RunState.WIPING):
        assert actions_for(busy) == set()  # the job under way owns the context
    assert actions_for(None) == set()  # no context selected


def test_launcher_and_tray_enable_what_actions_for_allows(qtbot: Any, paths: Paths) -> None:
    from sandbox_app.core.contexts import Profile  # noqa: PLC0415
    from sandbox_app.gui.actions import Action, actions_for  # noqa: PLC0415
    from sandbox_app.gui.signals import AppSignals  # noqa: PLC0415

    class Views:  # all the views need of the app (gui.protocols.AppState): no controller
        def __init__(self) -> None:
            self.signals, self.paths, self.jobs = AppSignals(), paths, asyncbridge.JobRunner()
            self.now = RunState.STOPPED
            self.warned: list[str] = []

        def state(self, name: str) -> RunState:
            return self.now

        def warnings(self, name: str) -> list[str]:
            return self.warned

        def image_note(self, context: object) -> str:
            return ""

        def running(self) -> list[str]:
            return [] if self.now is RunState.STOPPED else ["c1"]

    ContextStore(paths).create(Profile(name="c1", color="#112233"))
    app = Views()
    launcher = LauncherWindow(app, has_tray=True)
    qtbot.addWidget(launcher)
    tray = Tray(app)
    buttons = {"Start": Action.OPEN, "Quick reset": Action.QUICK_RESET,
               "Stop": Action.STOP, "Remove…": Action.REMOVE, "Settings…": Action.SETTINGS}
    entries = {"Open": Action.OPEN, "Quick reset": Action.QUICK_RESET, "Suspend": Action.STOP,
               "Stop…": Action.STOP}
    for app.now in RunState:
        allowed = actions_for(app.now)
        launcher.refresh()
        assert launcher.selected() == "c1"
        card = launcher.card("c1")
        assert {label: card.buttons[label].isEnabled() for label in buttons} == {
            label: action in allowed for label, action in buttons.items()}, app.now
        running = app.now is RunState.RUNNING  # a stopped context offers no Stop
        assert [card.buttons[b].isVisibleTo(card) for b in ("Quick reset", "Stop", "Remove…")
                ] == [running, running, not running]
        assert card.buttons["Start"].text() == ("Open" if running else "Start")
        tray.menu.aboutToShow.emit()
        menu = next(a.menu() for a in tray.menu.actions() if a.text() == f"c1 — {app.now.value}")
        assert isinstance(menu, QMenu)
        assert {a.text(): a.isEnabled() for a in menu.actions()} == {
            text: action in allowed for text, action in entries.items()}, app.now
        stop_all = bool(app.running())
        assert launcher.buttons["Stop all"].isEnabled() is stop_all
        assert next(a for a in tray.menu.actions()
                    if a.text() == "Stop all (discard)").isEnabled() is stop_all
    tray.hide()


def test_address_bar_searches_words_and_quick_reset_clears_it(qtbot: Any) -> None:
    from types import SimpleNamespace  # noqa: PLC0415

    from sandbox_app.core.images import Recipe  # noqa: PLC0415
    from sandbox_app.gui.session_window import SessionWindow  # noqa: PLC0415
    from sandbox_app.gui.signals import AppSignals  # noqa: PLC0415

    client = SimpleNamespace(width=64, height=48, framebuffer=bytearray(64 * 48 * 4),
                             on_update=None, on_resize=None,
                             set_desktop_size=lambda w, h: False)
    signals = AppSignals()
    recipe = Recipe(name="b", append="", memory_mib=64, ready_command="true",
                    open_url_command=("open",))
    window = SessionWindow("c", "#123456", client, signals,  # type: ignore[arg-type]
                           recipe=recipe, search="https://s.example/?q=%s")
    qtbot.addWidget(window)
    opened: list[str] = []
    signals.open_url_requested.connect(lambda _ctx, url: opened.append(url))
    assert window.address is not None
    for typed in ("red shoes", "example.org"):
        window.address.setText(typed)
        window.address.returnPressed.emit()
    assert opened == ["https://s.example/?q=red+shoes", "https://example.org"]
    window.replace_client(client)  # type: ignore[arg-type]
    assert window.address.text() == ""


def test_new_context_passphrase_must_be_typed_twice(qtbot: Any) -> None:
    from PySide6.QtWidgets import QDialog  # noqa: PLC0415

    from sandbox_app.gui.dialogs import NewContextDialog  # noqa: PLC0415

    dialog = NewContextDialog(["tiny"])
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.name.setText("secret")
    dialog.passphrase.setText("correct horse")
    dialog.passphrase_again.setText("correct hrose")
    dialog.accept()
    assert dialog.result() != QDialog.DialogCode.Accepted and dialog.isVisible()
    assert "differ" in dialog.mismatch.text()
    dialog.passphrase_again.setText("correct horse")
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted


def test_session_warnings_show_in_the_window_and_the_launcher(gui: Gui) -> None:
    gui.start()
    session = gui.app.runners["t1"].session
    assert session is not None
    session.warnings.append("the guest got no network lease: test")
    window = gui.app.windows["t1"]
    wait_until(lambda: "no network lease: test" in window.warning_bar.text(), 10)
    assert window.warning_bar.isVisibleTo(window)
    gui.launcher.refresh()
    state = gui.launcher.card("t1").state_label
    assert state.text().endswith("⚠") and "no network lease: test" in state.toolTip()


@ends_clean
def test_suspend_from_the_window_then_resume_from_the_launcher(gui: Gui) -> None:
    gui.start()
    gui.guest("t1", "echo before-suspend > /root/s; sync")
    gui.app.windows["t1"].suspend_action.trigger()
    wait_until(gui.ended)
    card = gui.launcher.card("t1")
    wait_until(lambda: card.state_label.text() == "suspended")
    assert card.start_button.text() == "Resume…" and "suspended" in card.details.text()
    card.start_button.click()  # asks: Resume or Discard
    box = wait_for_box("askResume")
    next(b for b in box.buttons() if b.text() == "Resume").click()
    wait_until(lambda: gui.app.state("t1") is RunState.RUNNING and "t1" in gui.app.windows)
    assert gui.guest("t1", "cat /root/s") == "before-suspend\n"


def wait_for_box(name: str) -> QMessageBox:
    found: list[QMessageBox] = []

    def shown() -> bool:
        found[:] = [w for w in QApplication.topLevelWidgets()
                    if isinstance(w, QMessageBox) and w.objectName() == name and w.isVisible()]
        return bool(found)

    wait_until(shown, 10)
    return found[0]

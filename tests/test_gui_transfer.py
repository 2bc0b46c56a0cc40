"""Files and clipboard in the desktop app, through its real widgets (offscreen Qt, real QEMU).

Reuses test_gui's app harness: the qasync loop, the ``gui`` fixture and ``ends_clean``.
"""
# ruff: noqa: F811  (the fixtures imported from test_gui are the tests' parameters)

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog
from test_gui import Gui, _FakeClient, ends_clean, gui, loop, wait_until  # noqa: F401

from sandbox_app.core.contexts import ContextStore
from sandbox_app.core.guest import ClipboardPolicy, GuestFile
from sandbox_app.core.images import Recipe
from sandbox_app.gui import asyncbridge
from sandbox_app.gui.session_window import SessionWindow
from sandbox_app.gui.signals import AppSignals

pytestmark = pytest.mark.timeout(240)
DOWNLOADS = "/root/Downloads"


def set_policy(gui: Gui, policy: ClipboardPolicy) -> None:
    store = ContextStore(gui.app.paths)
    profile = store.get("t1").profile
    profile.clipboard = policy
    store.save(profile)


def listed(gui: Gui) -> dict[str, GuestFile]:
    panel = gui.app.windows["t1"].downloads
    files = [panel.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(panel.list.count())]
    return {f.name: f for f in files}


def file_dialog(gui: Gui, name: str) -> QFileDialog:
    """The (non-blocking) file dialog the app opened over the session window."""
    window = gui.app.windows["t1"]
    wait_until(lambda: window.findChild(QFileDialog, name) is not None, 10)
    dialog = window.findChild(QFileDialog, name)
    assert dialog is not None and dialog.isVisible()
    return dialog


def guest_sha(gui: Gui, path: str) -> str:
    return gui.guest("t1", f"sha256sum '{path}' 2>/dev/null | cut -c1-64").strip()


def drag_and_drop(window: SessionWindow, url: QUrl) -> QDropEvent:
    """Drag ``url`` over the guest's screen and drop it, as the window system would."""
    mime = QMimeData()
    mime.setUrls([url])
    pos = window.display.mapTo(window, QPoint(30, 30))
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier)
    with warnings.catch_warnings():  # PySide marks the QPoint constructor deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        QApplication.sendEvent(window.windowHandle(), QDragEnterEvent(pos, *args))
    drop = QDropEvent(QPointF(pos), *args)
    drop.ignore()
    QApplication.sendEvent(window.windowHandle(), drop)
    return drop


def wait_guest(gui: Gui, command: str, expected: str, timeout: float = 30) -> None:
    """Ask the guest until ``command`` prints ``expected`` (the app runs meanwhile)."""
    deadline = time.monotonic() + timeout
    while (got := gui.guest("t1", command)) != expected:
        assert time.monotonic() < deadline, f"guest: {command!r} printed {got!r}"
        asyncbridge.complete(asyncio.sleep(0.2))


@ends_clean
def test_a_guest_download_is_listed_and_saved_to_the_host_byte_identical(
        gui: Gui, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    gui.start()
    guest_sum = gui.guest("t1", f"mkdir -p {DOWNLOADS} && head -c 300000 /dev/urandom "
                                f"> {DOWNLOADS}/report.pdf && sha256sum {DOWNLOADS}/report.pdf "
                                "| cut -c1-64").strip()
    window = gui.app.windows["t1"]
    window.downloads_action.trigger()  # opening the panel lists the guest's files
    wait_until(lambda: "report.pdf" in listed(gui), 30)
    assert "not saved" in window.downloads.status.text()
    target = tmp_path / "chosen"
    target.mkdir()
    (target / "report.pdf").write_bytes(b"mine")  # must survive
    window.downloads.select_all()
    window.downloads.save_button.click()
    dialog = file_dialog(gui, "chooseDirectory")
    assert Path(dialog.directory().absolutePath()) == tmp_path / "Downloads/Blank Slate/t1"
    dialog.fileSelected.emit(str(target))  # what choosing the folder and OK do
    dialog.close()
    wait_until(lambda: (target / "report (1).pdf").exists()
               and not list(target.glob(".*.part")), 30)
    saved = (target / "report (1).pdf").read_bytes()
    assert hashlib.sha256(saved).hexdigest() == guest_sum
    assert (target / "report.pdf").read_bytes() == b"mine"
    wait_until(lambda: "not saved" not in window.downloads.status.text(), 30)  # refreshed


@ends_clean
def test_dropping_a_host_file_onto_the_window_copies_it_into_the_guest(
        gui: Gui, tmp_path: Path) -> None:
    gui.start()
    source = tmp_path / "notes.txt"
    source.write_bytes(os.urandom(200_000))
    drop = drag_and_drop(gui.app.windows["t1"], QUrl.fromLocalFile(str(source)))
    assert drop.isAccepted()
    want = hashlib.sha256(source.read_bytes()).hexdigest()
    wait_until(lambda: not gui.app.jobs.find("send-files-t1"), 30)
    assert guest_sha(gui, f"{DOWNLOADS}/notes.txt") == want


@ends_clean
def test_send_file_asks_which_files_and_copies_them(gui: Gui, tmp_path: Path) -> None:
    gui.start()
    source = tmp_path / "a b.bin"
    source.write_bytes(b"x" * 5000)
    gui.app.windows["t1"].send_action.trigger()
    dialog = file_dialog(gui, "chooseFiles")
    dialog.filesSelected.emit([str(source)])
    dialog.close()
    wait_until(lambda: gui.app.jobs.find("send-files-t1") is not None, 10)
    wait_until(lambda: not gui.app.jobs.find("send-files-t1"), 30)
    assert guest_sha(gui, f"{DOWNLOADS}/a b.bin") == hashlib.sha256(b"x" * 5000).hexdigest()


@ends_clean
def test_exit_dialog_warns_about_downloads_not_saved(gui: Gui, tmp_path: Path) -> None:
    gui.start()
    gui.guest("t1", f"mkdir -p {DOWNLOADS} && cd {DOWNLOADS} && echo 1 > one.txt && "
                    "echo 2 > two.txt && echo 3 > kept.txt")
    window = gui.app.windows["t1"]
    kept = GuestFile("kept.txt", 2)
    job = gui.app.transfers.save_to("t1", [kept], tmp_path)
    assert job is not None
    wait_until(job.done, 30)
    window.close()
    wait_until(lambda: "t1" in gui.app.exit_dialogs)
    dialog = gui.app.exit_dialogs["t1"]
    wait_until(dialog.discard_button.isEnabled, 30)
    note = dialog.downloads_note
    assert note.isVisible()
    assert "2 downloaded files were not saved to the host" in note.text()
    assert "one.txt" in note.text() and "two.txt" in note.text()
    assert "kept.txt" not in note.text()
    dialog.cancel_button.click()


@ends_clean
def test_clipboard_shortcuts_copy_both_ways_with_policy_both(gui: Gui) -> None:
    set_policy(gui, ClipboardPolicy.BOTH)
    gui.start()
    window = gui.app.windows["t1"]
    window.activateWindow()
    QGuiApplication.clipboard().setText("from the host ✓")
    QTest.keyClick(window.display, Qt.Key.Key_V,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    wait_guest(gui, "cat /run/blankslate-clipboard 2>/dev/null", "from the host ✓")
    gui.guest("t1", "printf 'from the guest' | /usr/bin/blankslate-clipboard set")
    QTest.keyClick(window.display, Qt.Key.Key_C,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    wait_until(lambda: QGuiApplication.clipboard().text() == "from the guest", 30)


def _window(qtbot: Any, policy: ClipboardPolicy, recipe: Recipe) -> SessionWindow:
    window = SessionWindow("t1", "#112233", _FakeClient(), AppSignals(),  # type: ignore[arg-type]
                           recipe=recipe, clipboard=policy)
    qtbot.addWidget(window)
    return window


CLIP = Recipe(name="tiny", append="", memory_mib=64, ready_command="true",
              clipboard_set_command=("set",), clipboard_get_command=("get",))


def test_clipboard_actions_follow_the_policy(qtbot: Any) -> None:
    both = _window(qtbot, ClipboardPolicy.BOTH, CLIP)
    assert both.paste_action.isEnabled() and both.copy_action.isEnabled()
    one_way = _window(qtbot, ClipboardPolicy.HOST_TO_GUEST, CLIP)
    assert one_way.paste_action.isEnabled() and not one_way.copy_action.isEnabled()
    assert "does not allow copying from the guest" in one_way.copy_action.toolTip()
    off = _window(qtbot, ClipboardPolicy.OFF, CLIP)
    assert not off.paste_action.isEnabled() and not off.copy_action.isEnabled()
    assert "off" in off.paste_action.toolTip()
    bare = _window(qtbot, ClipboardPolicy.BOTH,
                   Recipe(name="bare", append="", memory_mib=64, ready_command="true"))
    assert not bare.paste_action.isEnabled()
    assert "has no clipboard" in bare.paste_action.toolTip()


def test_only_local_files_are_accepted_as_drops(qtbot: Any) -> None:
    window = _window(qtbot, ClipboardPolicy.BOTH, CLIP)
    window.show()
    sent: list[tuple[str, list[Path]]] = []
    window.signals.send_files_requested.connect(lambda c, f: sent.append((c, f)))
    assert not drag_and_drop(window, QUrl("https://example.org/x.pdf")).isAccepted()
    assert sent == []
    assert drag_and_drop(window, QUrl.fromLocalFile("/etc/hostname")).isAccepted()
    assert sent == [("t1", [Path("/etc/hostname")])]


def test_new_context_dialog_offers_the_clipboard_policy(gui: Gui) -> None:
    dialog = gui.launcher.new_context()
    assert dialog.clipboard.currentData() is ClipboardPolicy.HOST_TO_GUEST
    dialog.name.setText("clip")
    dialog.image.setCurrentIndex(dialog.image.findData("tiny"))
    dialog.clipboard.setCurrentIndex(dialog.clipboard.findData(ClipboardPolicy.OFF))
    dialog.accept()
    assert ContextStore(gui.app.paths).get("clip").profile.clipboard is ClipboardPolicy.OFF


@ends_clean
def test_cancelling_a_save_leaves_no_partial_file(gui: Gui, tmp_path: Path) -> None:
    gui.start()
    gui.guest("t1", f"mkdir -p {DOWNLOADS} && head -c 60000000 /dev/zero > {DOWNLOADS}/big.iso")
    out = tmp_path / "out"
    job = gui.app.transfers.save_to("t1", [GuestFile("big.iso", 60_000_000)], out)
    assert job is not None and job.cancellable
    wait_until(lambda: any(out.glob(".blankslate-*.part")), 30)  # the copy is under way
    assert job.cancel()
    wait_until(job.done, 30)
    assert list(out.iterdir()) == []
    assert gui.guest("t1", "echo alive") == "alive\n"  # the agent still answers


@ends_clean
def test_a_guest_stalling_the_downloads_check_does_not_hold_the_exit_dialog(gui: Gui) -> None:
    gui.start()
    # The guest agent freezes half a second from now: every request to it stalls.
    gui.guest("t1", "(sleep 0.5; kill -STOP $(pidof qemu-ga)) >/dev/null 2>&1 &")
    asyncbridge.complete(asyncio.sleep(1.0))
    t0 = time.monotonic()
    gui.app.windows["t1"].close()
    wait_until(lambda: "t1" in gui.app.exit_dialogs)
    dialog = gui.app.exit_dialogs["t1"]
    assert not dialog.discard_button.isEnabled()  # not before the check has answered
    wait_until(dialog.discard_button.isEnabled, 30)
    assert time.monotonic() - t0 < 15
    assert dialog.downloads_note.isVisible()
    assert "Could not check the guest's downloads" in dialog.downloads_note.text()
    dialog.cancel_button.click()


@ends_clean
def test_a_download_moved_to_persistent_is_listed_there_and_outlives_the_session(
        gui: Gui, tmp_path: Path) -> None:
    gui.start()
    gui.guest("t1", f"mkdir -p {DOWNLOADS} && echo statement > {DOWNLOADS}/statement.txt")
    window = gui.app.windows["t1"]
    window.downloads_action.trigger()
    wait_until(lambda: "statement.txt" in listed(gui), 30)
    assert not listed(gui)["statement.txt"].folder.endswith("Persistent")
    window.downloads.select_all()
    assert window.downloads.move_button.isEnabled()
    window.downloads.move_button.click()
    wait_until(lambda: "statement.txt" in listed(gui)
               and listed(gui)["statement.txt"].folder.endswith("/Persistent"), 30)
    item = window.downloads.list.item(0).text()
    assert item.startswith("Persistent/statement.txt"), item
    assert gui.guest("t1", f"ls {DOWNLOADS}; cat /root/Persistent/statement.txt") == \
        "statement\n"
    # Saved out to the host from there like any download.
    window.downloads.select_all()
    asyncbridge.complete(asyncio.sleep(0))
    gui.app.transfers.save_to("t1", window.downloads.selected(), tmp_path)
    wait_until((tmp_path / "statement.txt").exists, 30)
    assert (tmp_path / "statement.txt").read_text() == "statement\n"

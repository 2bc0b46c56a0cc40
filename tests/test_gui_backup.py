"""Backup in the desktop app, driven through its real widgets (Qt offscreen): Back up now
from a card and from the Backup menu, Backup settings… (S3 credentials into the keyring,
never into app.toml), Restore from backup… into an empty home, the last backup on each card,
and one-line errors. Real tiny-guest sessions (through the CLI) make and check the kept data;
a real SeaweedFS serves S3."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_gui

os.environ["QT_QPA_PLATFORM"] = "offscreen"

from helpers import FakeKeyring, exec_stdout, run_cli, run_session
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QMessageBox, QPushButton
from seaweed import ACCESS_KEY, SECRET_KEY, S3Server, seaweedfs
from test_gui import Gui, wait_for_box, wait_until

from sandbox_app.core.backup import CredentialStore, last_backups, record_backup
from sandbox_app.core.contexts import ContextStore, Profile
from sandbox_app.core.session import AppSettings
from sandbox_app.core.session.settings import save_backup_settings
from sandbox_app.core.storage import Paths
from sandbox_app.gui.backup_dialogs import (
    BackupPassphraseDialog,
    BackupSettingsDialog,
    RestoreDialog,
)

pytestmark = pytest.mark.timeout(600)
loop, gui = test_gui.loop, test_gui.gui  # the app's fixtures (qasync loop, tiny context t1)

PASS = "correct horse battery staple"
MARKER = "BSGUI-3e8a51c0"  # on the guest's disk (kept)
PMARKER = "BSGUIP-9d27b4f6"  # in its persistent folder


@pytest.fixture(autouse=True)
def collect_in_the_gui_thread(loop: Any) -> Iterator[None]:
    """This test's apps are garbage once it ends: collect them now, in the GUI thread. Left
    to Python, a collection can run in whichever thread allocates next — a backup's worker
    — and a Qt object destroyed there leaves its timers registered with the GUI thread
    (a crash in a later test)."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


def notifications(gui: Gui) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    gui.app.signals.notify.connect(lambda title, text: seen.append((title, text)))
    return seen


def set_backup_settings(gui: Gui, target: str, endpoint: str = "", key_id: str = "",
                        secret: str = "") -> BackupSettingsDialog:
    """Backup settings… from the launcher's Backup menu, filled in, OK."""
    next(a for a in gui.launcher.backup_menu.actions()
         if a.text() == "Backup settings…").trigger()
    dialog = gui.app.backups.settings_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.fields.target.setText(target)
    dialog.fields.endpoint.setText(endpoint)
    dialog.fields.key_id.setText(key_id)
    dialog.fields.secret.setText(secret)
    ok_button(dialog).click()
    wait_until(lambda: AppSettings.load(gui.app.paths).backup_target == target, 10)
    return dialog


def answer_passphrase(gui: Gui, passphrase: str, *, new: bool,
                      again: str | None = None) -> BackupPassphraseDialog:
    """The backup passphrase dialog, answered (``again``: what the second field gets)."""
    wait_until(lambda: gui.app.backups.passphrase_dialog is not None
               and gui.app.backups.passphrase_dialog.isVisible(), 30)
    dialog = gui.app.backups.passphrase_dialog
    assert dialog is not None and dialog.new is new
    assert dialog.again.isVisibleTo(dialog) is new  # typed twice only for a new backup
    dialog.passphrase.setText(passphrase)
    dialog.again.setText(passphrase if again is None else again)
    ok_button(dialog).click()
    return dialog


def ok_button(dialog: QDialog) -> QPushButton:
    box = dialog.findChild(QDialogButtonBox)
    assert box is not None
    return box.button(QDialogButtonBox.StandardButton.Ok)


def one_line(text: str) -> bool:
    return bool(text) and "\n" not in text.strip() and "Traceback" not in text


def keep_markers(gui: Gui, context: str = "t1") -> None:
    """A real session writes a marker on the disk and one in the persistent folder, kept.
    (The CLI makes the default contexts too: the launcher then shows new cards.)"""
    run_session(context, f"echo {MARKER} > /root/marker",
                f"echo {PMARKER} > /root/Persistent/p && sync", on_exit="keep")
    gui.launcher.refresh()


def restore_and_see_card(gui: Gui, dialog: RestoreDialog, seen: list[tuple[str, str]],
                         name: str) -> None:
    """Restore in the dialog: done (notified), the dialog closes, ``name``'s card says kept."""
    closed: list[int] = []
    dialog.finished.connect(closed.append)
    dialog.restore_button.click()
    wait_until(lambda: any(t == "Restore done" for t, _ in seen), 300)
    wait_until(lambda: bool(closed), 10)
    wait_until(lambda: "kept " in gui.launcher.card(name).details.text(), 10)


def empty_home(base: Path, monkeypatch: pytest.MonkeyPatch, images: Path) -> Paths:
    """Another laptop: a new home with the tiny image only (BLANKSLATE_HOME points there)."""
    root = base / "laptop-b"
    (root / "config").mkdir(parents=True, mode=0o700)
    (root / "config" / "app.toml").write_text("image_update_days = 0\n")
    monkeypatch.setenv("BLANKSLATE_HOME", str(root))
    paths = Paths.from_env().ensure()
    paths.images.symlink_to(images)
    return paths


# ---------------------------------------------------------------------------- no VM needed


def test_each_card_says_when_its_context_was_last_backed_up(gui: Gui) -> None:
    ContextStore(gui.app.paths).create(Profile(name="other", image="tiny"))
    record_backup(gui.app.paths, ["t1"], "20261128000000abcdef01", "/media/usb",
                  at=time.time() - 3 * 3600 - 60)
    gui.launcher.refresh()
    assert gui.launcher.card("t1").backup_label.text() == "backed up 3 hours ago"
    assert gui.launcher.card("other").backup_label.text() == "never backed up"


def test_backup_settings_are_checked_before_ok(gui: Gui, tmp_path: Path) -> None:
    next(a for a in gui.launcher.backup_menu.actions()
         if a.text() == "Backup settings…").trigger()
    dialog = gui.app.backups.settings_dialog
    assert dialog is not None
    ok = ok_button(dialog)
    for bad, why in (("relative/folder", "full path"), ("s3://No_Such", "bucket"),
                     ("ftp://host/x", "a folder or s3://")):
        dialog.fields.target.setText(bad)
        ok.click()
        assert dialog.isVisible() and why in dialog.error.text(), bad
    dialog.fields.target.setText("s3://my-bucket/laptop")
    dialog.fields.endpoint.setText("not a url")
    ok.click()
    assert dialog.isVisible() and "endpoint" in dialog.error.text()
    dialog.fields.endpoint.setText("")
    dialog.fields.key_id.setText("only-the-id")
    ok.click()
    assert dialog.isVisible() and "both" in dialog.error.text()
    assert AppSettings.load(gui.app.paths).backup_target == ""  # nothing saved yet
    dialog.reject()


# ---------------------------------------------------------------------------- real QEMU


def test_back_up_from_a_card_then_restore_into_an_empty_home(
        gui: Gui, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = gui.app.paths
    keep_markers(gui)
    card = gui.launcher.card("t1")
    assert card.backup_label.text() == "never backed up"
    assert not gui.launcher.restore_offer.isVisibleTo(gui.launcher)  # t1 holds data
    usb = tmp_path / "usb"
    set_backup_settings(gui, str(usb))
    seen = notifications(gui)

    card.back_up_action.trigger()  # the card's More menu: Back up now
    # A new backup: its passphrase typed twice; a typo is caught before anything is written.
    mistyped = answer_passphrase(gui, PASS, new=True, again=PASS + "!")
    assert mistyped.isVisible() and "differ" in mistyped.error.text()
    mistyped.again.setText(PASS)
    ok_button(mistyped).click()
    wait_until(lambda: any(t == "Backup done" for t, _ in seen), 300)
    wait_until(lambda: card.backup_label.text() == "backed up just now", 10)
    assert last_backups(paths)["t1"].target == str(usb)
    gui.close()

    # Another laptop: a fresh install whose default context of that name holds nothing yet —
    # though the app has already prepared its next overlay, standby and persistent folder.
    paths_b = empty_home(tmp_path, monkeypatch, paths.images.resolve())
    ContextStore(paths_b).create(Profile(name="t1", image="tiny", color="#445566"))
    laptop = Gui(paths_b)
    try:
        laptop.app.prepare_spares()
        prepared = ContextStore(paths_b).get("t1")
        wait_until(lambda: laptop.app.runners["t1"].spare_ready
                   and prepared.volume_path.exists(), 120)
        laptop.launcher.refresh()
        assert laptop.launcher.restore_offer.isVisibleTo(laptop.launcher)
        seen_b = notifications(laptop)
        laptop.launcher.restore_button.click()
        dialog = laptop.app.backups.restore_dialog
        assert dialog is not None and dialog.isVisible()
        assert dialog.fields.target.text() == ""  # nothing configured on this laptop yet
        dialog.fields.target.setText(str(usb))

        dialog.passphrase.setText("not the passphrase")
        dialog.find_button.click()
        wait_until(lambda: bool(dialog.error.text()), 60)
        assert "wrong backup passphrase" in dialog.error.text()
        assert one_line(dialog.error.text()) and not dialog.restore_button.isEnabled()

        dialog.passphrase.setText(PASS)
        dialog.find_button.click()
        wait_until(lambda: dialog.snapshot.count() == 1, 60)
        assert dialog.checked_contexts() == ["t1"] and dialog.restore_button.isEnabled()
        restore_and_see_card(laptop, dialog, seen_b, "t1")
        assert not laptop.launcher.restore_offer.isVisibleTo(laptop.launcher)
        # This laptop now backs up where it restored from.
        wait_until(lambda: AppSettings.load(paths_b).backup_target == str(usb), 10)
    finally:
        laptop.close()
    report = run_session("t1", "cat /root/marker /root/Persistent/p")
    assert exec_stdout(report) == f"{MARKER}\n{PMARKER}\n"


def test_wrong_passphrase_and_a_context_holding_data_are_one_line(
        gui: Gui, tmp_path: Path) -> None:
    paths = gui.app.paths
    keep_markers(gui)
    usb = tmp_path / "usb"
    made = run_cli("backup", "t1", "--to", str(usb), "--passphrase-stdin", input=PASS + "\n")
    assert made.returncode == 0, made.stderr
    assert last_backups(paths)["t1"].target == str(usb)  # the CLI notes it too
    gui.launcher.refresh()
    assert gui.launcher.card("t1").backup_label.text() == "backed up just now"
    save_backup_settings(paths, str(usb), "")
    seen = notifications(gui)

    gui.launcher.card("t1").back_up_action.trigger()
    answer_passphrase(gui, "not the passphrase", new=False)  # an existing backup: once
    box = wait_for_box("errorBox")
    message = box.text()
    assert "wrong backup passphrase" in message and one_line(message)
    box.button(QMessageBox.StandardButton.Ok).click()
    wait_until(lambda: ("Backup failed", message) in seen, 10)

    gui.launcher.card("t1").back_up_action.trigger()  # asked again: not remembered
    answer_passphrase(gui, PASS, new=False)
    wait_until(lambda: any(t == "Backup done" for t, _ in seen), 300)

    # Restoring over a context that holds data is refused, in one line, and changes nothing.
    dialog = gui.app.backups.open_restore()
    assert dialog.fields.target.text() == str(usb)
    dialog.passphrase.setText(PASS)
    dialog.find_button.click()
    wait_until(lambda: dialog.snapshot.count() == 2, 60)
    dialog.restore_button.click()
    wait_until(lambda: bool(dialog.error.text()), 120)
    assert "already exists here and holds data" in dialog.error.text()
    assert one_line(dialog.error.text()) and dialog.isVisible()
    # ... so it is restored next to it, under another name ("Restore as").
    dialog.as_name.setText("bad/name")
    dialog.restore_button.click()
    wait_until(lambda: "context name" in dialog.error.text(), 60)
    assert one_line(dialog.error.text()) and dialog.isVisible()
    dialog.as_name.setText("t1-copy")
    restore_and_see_card(gui, dialog, seen, "t1-copy")
    assert exec_stdout(run_session("t1", "cat /root/marker")) == f"{MARKER}\n"
    assert exec_stdout(run_session("t1-copy", "cat /root/marker /root/Persistent/p")) \
        == f"{MARKER}\n{PMARKER}\n"


def test_s3_credentials_go_to_the_keyring_and_never_into_app_toml(
        gui: Gui, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)  # the app's keyring is the only way in
    ring = FakeKeyring()
    gui.app.backups.credentials = CredentialStore(keyring_backend=ring)
    paths = gui.app.paths
    target = "s3://gui-backups/laptop"
    set_backup_settings(gui, target, s3.endpoint, ACCESS_KEY, SECRET_KEY)
    wait_until(lambda: bool(ring.items), 10)

    toml = (paths.config / "app.toml").read_text()
    assert target in toml and s3.endpoint in toml
    for root in (paths.config, paths.state, paths.data / "keys"):
        for f in (p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            assert SECRET_KEY.encode() not in f.read_bytes(), f
            assert ACCESS_KEY.encode() not in f.read_bytes(), f
    assert [s for s, _ in ring.items] == ["blankslate-backup"]
    assert SECRET_KEY in next(iter(ring.items.values()))

    seen = notifications(gui)
    next(a for a in gui.launcher.backup_menu.actions() if a.text() == "Back up all now"
         ).trigger()
    answer_passphrase(gui, PASS, new=True)
    wait_until(lambda: any(t in ("Backup done", "Backup failed") for t, _ in seen), 300)
    assert [t for t, _ in seen] == ["Backup done"], seen
    assert gui.launcher.card("t1").backup_label.text() == "backed up just now"
    keys = [o["Key"] for o in s3.client().list_objects_v2(
        Bucket="gui-backups").get("Contents", [])]
    assert "laptop/config" in keys and any(k.startswith("laptop/snapshots/") for k in keys)

    dialog = gui.app.backups.open_settings()  # shows that they are stored, not what they are
    assert "stored in the keyring" in dialog.fields.key_id.placeholderText()
    assert dialog.fields.key_id.text() == "" and dialog.fields.secret.text() == ""
    dialog.reject()


def test_cancel_stops_a_backup_without_a_snapshot_or_an_error(gui: Gui, tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    save_backup_settings(gui.app.paths, str(usb), "")
    seen = notifications(gui)
    gui.launcher.card("t1").back_up_action.trigger()
    answer_passphrase(gui, PASS, new=True)
    wait_until(lambda: gui.app.jobs.find("backup") is not None, 30)
    job = gui.app.jobs.find("backup")
    assert job is not None
    progress: list[str] = []
    job.progress.connect(lambda phase, _pct: progress.append(phase))
    wait_until(lambda: bool(progress), 60)  # under way (the repository is made)
    failed: list[str] = []
    job.failed.connect(failed.append)
    assert job.cancel()
    wait_until(lambda: bool(failed), 60)
    assert failed == ["cancelled"] and not seen  # no notification, no error box
    assert not list((usb / "snapshots").glob("*")) and "t1" not in last_backups(gui.app.paths)

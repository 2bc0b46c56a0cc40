"""Start fresh on the new image, from the launcher (real widgets, Qt offscreen): a tiny context
kept on an earlier build of its image — after a real ``image update`` — is offered the button,
refused while it runs, and after the confirmation sits on the new build with its persistent
folder as it was. The home has its own copy of the tiny image (``test_image_update.own_tiny``)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import test_gui
import test_image_update

os.environ["QT_QPA_PLATFORM"] = "offscreen"

from helpers import exec_stdout, run_cli, run_session
from PySide6.QtWidgets import QMessageBox
from test_gui import Gui, wait_for_box, wait_until

from sandbox_app.core.session import RunState
from sandbox_app.core.storage import Paths

pytestmark = pytest.mark.timeout(900)
loop, own_tiny = test_gui.loop, test_image_update.own_tiny


def _point(paths: Paths, context: str) -> str:
    return str(json.loads((paths.contexts_data / context / "current.json").read_text())
               ["snapshot"])


def test_a_card_kept_on_an_earlier_image_starts_fresh_on_the_new_one(
        own_tiny: Paths, loop: Any) -> None:
    paths = own_tiny
    made = run_cli("context", "create", "kept", "--image", "tiny", "--data-size", "32M")
    assert made.returncode == 0, made.stderr
    run_session("kept", "echo on-old-image > /root/k; echo folder > /root/Persistent/p; sync",
                on_exit="keep")
    old_point = _point(paths, "kept")
    updated = run_cli("image", "update", "tiny", timeout=900)
    assert updated.returncode == 0, updated.stderr

    gui = Gui(paths)
    try:
        card = gui.launcher.card("kept")
        assert "kept on an earlier image: updates available" in card.details.text()
        assert card.fresh_button.isVisibleTo(card) and card.fresh_button.isEnabled()
        assert card.fresh_action.isEnabled()  # in its More menu too
        personal = gui.launcher.card("personal")  # made by the CLI, never kept
        assert not personal.fresh_button.isVisibleTo(personal)

        # Refused, in one line, while the context has a running session.
        gui.start("kept")
        assert not gui.launcher.card("kept").fresh_button.isEnabled()
        gui.app.signals.reset_context_requested.emit("kept")
        box = wait_for_box("errorBox")
        assert box.text() == "“kept” has a running session: stop it first"
        box.button(QMessageBox.StandardButton.Ok).click()
        gui.app.stop_all()
        wait_until(lambda: gui.ended("kept"), 60)
        assert _point(paths, "kept") == old_point

        seen: list[str] = []
        gui.app.signals.notify.connect(lambda title, _text: seen.append(title))
        card = gui.launcher.card("kept")
        card.fresh_button.click()
        confirm = gui.launcher.findChild(QMessageBox, "confirmStartFresh")
        assert confirm is not None and "kept" in confirm.text()
        assert "dropped" in confirm.text() and "persistent folder is kept" in confirm.text()
        confirm.button(QMessageBox.StandardButton.Yes).click()
        wait_until(lambda: "“kept” is on the new image" in seen, 120)
        assert _point(paths, "kept") != old_point
        gui.launcher.refresh()
        card = gui.launcher.card("kept")
        assert not card.fresh_button.isVisibleTo(card)
        assert "updates available" not in card.details.text()
        assert gui.app.state("kept") is RunState.STOPPED
    finally:
        gui.close()
    out = run_session("kept", "test -e /root/k && echo k || echo no-k; cat /root/Persistent/p")
    assert exec_stdout(out) == "no-k\nfolder\n"
    assert not (paths.images / "tiny" / "snapshots" / old_point).exists()  # collected

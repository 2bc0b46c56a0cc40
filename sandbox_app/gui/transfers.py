"""Carries out the session windows' file and clipboard requests (part of the app side).

Everything here starts from a user action: a button, a shortcut, a drop, an address. The
clipboard is never watched or synchronised in the background; files copied out are never
opened.
Downloads saved to the host (and files sent from it) are remembered per session, so the
exit dialog can name the downloads that would be lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QObject
from PySide6.QtGui import QGuiApplication

from ..core.guest import GuestFile, default_save_dir
from ..core.session import ContextRunner, RunState, Session
from .asyncbridge import Job, JobRunner
from .dialogs import choose_directory, choose_files
from .exit_dialog import ExitDialog
from .jobs import (
    ClipboardFromGuestJob,
    ClipboardToGuestJob,
    ListDownloadsJob,
    MoveToPersistentJob,
    OpenUrlJob,
    SaveDownloadsJob,
    SendFilesJob,
    UnsavedDownloadsJob,
)
from .session_window import SessionWindow
from .signals import AppSignals

EXIT_CHECK_TIMEOUT_S = 5.0
"""How long the exit dialog waits for the guest to list its downloads."""


class Sessions(Protocol):
    """What ``Transfers`` uses of the controller (``controller.App``, which owns it)."""

    signals: AppSignals
    runners: dict[str, ContextRunner]
    windows: dict[str, SessionWindow]
    jobs: JobRunner

    def submit(self, job: Job, progress_title: str | None = None) -> Job:
        """Run ``job``, its errors shown as dialogs (with a title: a progress dialog)."""
        ...


class Transfers(QObject):
    """Clipboard copies, the Downloads panel, Save to host, Send file and drops."""

    def __init__(self, app: Sessions) -> None:
        super().__init__()
        self.app = app
        self._saved: dict[str, set[GuestFile]] = {}  # session id → saved or sent files
        s = app.signals
        s.open_url_requested.connect(self.open_url)
        s.clipboard_to_guest_requested.connect(self.paste_into_guest)
        s.clipboard_from_guest_requested.connect(self.copy_from_guest)
        s.downloads_refresh_requested.connect(self.refresh)
        s.save_downloads_requested.connect(self.save)
        s.move_to_persistent_requested.connect(self.move_to_persistent)
        s.send_files_requested.connect(self.send)

    def _session(self, name: str) -> Session | None:
        runner = self.app.runners.get(name)
        if runner is None or runner.state is not RunState.RUNNING:
            return None
        return runner.session

    def saved(self, session: Session) -> set[GuestFile]:
        """The guest files saved to (or sent from) the host during ``session``."""
        live = {r.session.id for r in self.app.runners.values() if r.session is not None}
        for ended in self._saved.keys() - live:
            del self._saved[ended]
        return self._saved.setdefault(session.id, set())

    def _status(self, name: str, text: str) -> None:
        window = self.app.windows.get(name)
        if window is not None:
            window.statusBar().showMessage(text, 8000)

    # ------------------------------------------------------------------ pages

    def open_url(self, name: str, url: str) -> Job | None:
        """A page typed into the address bar (or given with ``run --url``)."""
        session = self._session(name)
        if session is None:
            return None
        self._status(name, f"Opening {url}…")
        return self.app.submit(OpenUrlJob(name, session, url))

    # ------------------------------------------------------------------ clipboard

    def paste_into_guest(self, name: str) -> Job | None:
        """Host clipboard text → guest clipboard (the user then pastes in the guest)."""
        session = self._session(name)
        if session is None:
            return None
        text = QGuiApplication.clipboard().text()
        if not text:
            self._status(name, "The host clipboard holds no text")
            return None
        job = ClipboardToGuestJob(name, session, text)
        job.finished.connect(lambda n: self._status(
            name, f"Host clipboard given to the guest ({n} bytes): paste it there"))
        return self.app.submit(job)

    def copy_from_guest(self, name: str) -> Job | None:
        """Guest clipboard text → host clipboard (if the context's policy allows)."""
        session = self._session(name)
        if session is None:
            return None
        job = ClipboardFromGuestJob(name, session)
        job.finished.connect(lambda text: self._to_host_clipboard(name, text))
        return self.app.submit(job)

    def _to_host_clipboard(self, name: str, text: str) -> None:
        if not text:  # keep what the host had rather than blank it
            self._status(name, "The guest clipboard holds no text")
            return
        QGuiApplication.clipboard().setText(text)
        self._status(name, f"Guest clipboard copied to the host ({len(text)} characters)")

    # ------------------------------------------------------------------ downloads

    def refresh(self, name: str) -> Job | None:
        """List the guest's downloads into the window's panel (errors shown there)."""
        session, window = self._session(name), self.app.windows.get(name)
        if session is None or window is None:
            return None
        job = ListDownloadsJob(name, session)
        job.finished.connect(lambda files: self._show(window, session, files))
        job.failed.connect(window.downloads.show_error)
        return self.app.jobs.submit(job)

    def _show(self, window: SessionWindow, session: Session, files: list[GuestFile]) -> None:
        if self.app.windows.get(window.context) is window:
            window.downloads.show_files(files, self.saved(session))

    def save(self, name: str, items: list[GuestFile]) -> None:
        """Ask for a host folder (default ``~/Downloads/Blank Slate/NAME``), then copy."""
        window = self.app.windows.get(name)
        if window is None or not items:
            return
        start = default_save_dir(name)
        try:
            start.mkdir(parents=True, exist_ok=True)
        except OSError:
            start = Path.home()
        choose_directory(window, f"Save downloads of “{name}” to…", start,
                         lambda folder: self.save_to(name, items, folder))

    def save_to(self, name: str, items: list[GuestFile], folder: Path) -> Job | None:
        """Copy ``items`` into ``folder``: existing host files are never overwritten."""
        session, window = self._session(name), self.app.windows.get(name)
        if session is None or window is None:
            return None
        job = SaveDownloadsJob(name, session, items, folder)
        job.finished.connect(lambda saved: self._status(
            name, f"Saved {len(saved)} file{'s' if len(saved) != 1 else ''} to {folder}"))
        return self._copying(name, window, session, job, f"Saving downloads of “{name}”…")

    def move_to_persistent(self, name: str, items: list[GuestFile]) -> Job | None:
        """Move downloads into the persistent folder, then list the folders again."""
        session, window = self._session(name), self.app.windows.get(name)
        if session is None or window is None or not items:
            return None
        job = MoveToPersistentJob(name, session, items)
        job.finished.connect(lambda n: self._status(
            name, f"Moved {n} file{'s' if n != 1 else ''} to Persistent"))
        job.failed.connect(window.downloads.show_error)
        job.ended.connect(lambda: self.refresh(name))
        return self.app.submit(job)

    def send(self, name: str, files: list[Path]) -> Job | None:
        """Copy host files into the guest's Downloads folder (asks which, if none given)."""
        window = self.app.windows.get(name)
        if window is None:
            return None
        if not files:
            choose_files(window, f"Send files to “{name}”", lambda chosen: self.send(name, chosen))
            return None
        session = self._session(name)
        if session is None:
            return None
        job = SendFilesJob(name, session, files)
        job.finished.connect(lambda sent: self._status(
            name, f"Sent {len(sent)} file{'s' if len(sent) != 1 else ''} to the guest's "
                  "Downloads folder"))
        return self._copying(name, window, session, job, f"Sending files to “{name}”…")

    def _copying(self, name: str, window: SessionWindow, session: Session,
                 job: SaveDownloadsJob | SendFilesJob, title: str) -> Job:
        window.downloads.set_busy(True)

        def ended() -> None:
            done = ([item for item, _path in job.saved] if isinstance(job, SaveDownloadsJob)
                    else job.sent)
            self.saved(session).update(done)
            if self.app.windows.get(name) is window:
                window.downloads.set_busy(False)
                self.refresh(name)

        job.ended.connect(ended)
        return self.app.submit(job, title)

    # ------------------------------------------------------------------ exit check

    def check_unsaved(self, name: str, dialog: ExitDialog) -> Job | None:
        """Let the exit dialog name the downloads not saved to the host."""
        session = self._session(name)
        if session is None:
            return None
        dialog.checking_downloads()
        job = UnsavedDownloadsJob(name, session, set(self.saved(session)),
                                  EXIT_CHECK_TIMEOUT_S)
        job.finished.connect(dialog.show_unsaved)
        job.failed.connect(dialog.downloads_unknown)
        return self.app.jobs.submit(job)

    def session_replaced(self, name: str) -> None:
        """After a quick reset: the panel shows the new session's (empty) downloads."""
        window = self.app.windows.get(name)
        if window is not None and window.downloads_dock.isVisible():
            self.refresh(name)

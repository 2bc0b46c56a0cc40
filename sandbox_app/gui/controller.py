"""The controller: carries out what the views ask for.

``App`` owns one ``core.runner.ContextRunner`` per context, the session windows and the
display connections. Views (launcher, tray, session windows) only emit ``AppSignals``
requests; ``App`` runs core coroutines as jobs (``asyncbridge``/``jobs``) and emits
``changed`` so the views re-read the state.

One idea over 400 lines: one handler a view request, each short; what grew apart went to
its own module (``transfers``, ``backups``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QSettings, Qt, QTimer
from PySide6.QtWidgets import QMessageBox, QProgressDialog

from ..core.contexts import Context, ContextStore, ExitDefault, Profile, key_store
from ..core.errors import BlankSlateError, UsageError
from ..core.guest import rfb
from ..core.images import ImageStore
from ..core.session import AppSettings, ContextRunner, EndReport, RunState, SleepWatch
from ..core.session.control import HOWS
from ..core.session.updates import image_note
from ..core.storage import Paths
from ..core.vm import Accel
from .asyncbridge import CANCELLED, Job, JobRunner
from .backups import Backups
from .dialogs import ask, ask_passphrase, ask_resume, show_error
from .exit_dialog import ExitChoice, ExitDialog
from .format import human_bytes
from .jobs import (
    BuildImageJob,
    ChangeSettingsJob,
    DisplayJob,
    EndSessionJob,
    ProbeAccelJob,
    QuickResetJob,
    ReconnectDisplayJob,
    RemoveContextJob,
    ResetContextJob,
    ResyncJob,
    StartSessionJob,
    StopAllJob,
)
from .session_window import SessionWindow
from .settings_dialog import SettingsChange
from .signals import AppSignals
from .transfers import Transfers

log = logging.getLogger(__name__)


class App(QObject):
    """The controller: sessions, their windows and displays, and every job."""

    def __init__(self, paths: Paths) -> None:
        super().__init__()
        self.paths = paths
        self.signals = AppSignals()
        self.jobs = JobRunner()
        self.runners: dict[str, ContextRunner] = {}
        self._prepare_lock = asyncio.Lock()  # one spare overlay made at a time, app-wide
        self.windows: dict[str, SessionWindow] = {}
        self.displays: dict[str, DisplayJob] = {}
        self.exit_dialogs: dict[str, ExitDialog] = {}
        self._error_boxes: list[QMessageBox] = []
        self.quitting = False
        self.transfers = Transfers(self)
        self.backups = Backups(self)
        # Each context's session window size and position (under the config dir, so
        # BLANKSLATE_HOME moves it too).
        self.window_state = QSettings(str(paths.config / "windows.ini"),
                                      QSettings.Format.IniFormat)
        s = self.signals
        s.open_requested.connect(self.open_context)
        s.quick_reset_requested.connect(self.quick_reset)
        s.stop_requested.connect(self.request_stop)
        s.suspend_requested.connect(self.suspend)
        s.stop_all_requested.connect(self.confirm_stop_all)
        s.remove_requested.connect(self.remove_context)
        s.create_requested.connect(self.create_context)
        s.settings_requested.connect(self.change_settings)
        s.build_requested.connect(self.build_image)
        s.reset_context_requested.connect(self.reset_context)
        s.error.connect(self._show_error)
        self.jobs.changed.connect(s.changed)
        self.sleep_watch = SleepWatch()
        self._warning_timer = QTimer(self)
        self._warning_timer.setInterval(1000)
        self._warning_timer.timeout.connect(self._tick)
        self._warning_timer.start()

    # ------------------------------------------------------------------ state (for views)

    def state(self, name: str) -> RunState:
        runner = self.runners.get(name)
        return runner.state if runner is not None else RunState.STOPPED

    def warnings(self, name: str) -> list[str]:
        runner = self.runners.get(name)
        session = runner.session if runner is not None else None
        return list(dict.fromkeys(session.warnings)) if session is not None else []

    def image_note(self, context: Context) -> str:
        try:
            return image_note(context, ImageStore(self.paths).get(context.profile.image))
        except (BlankSlateError, OSError):
            return ""

    def _tick(self) -> None:
        self._show_warnings()
        if self.sleep_watch.check() and self.running():
            self.submit(ResyncJob(list(self.runners.values())),
                        "The computer slept: setting the guests' clocks and networks…")

    def _show_warnings(self) -> None:
        """Session warnings can come late (a lease that failed while the session settled):
        the windows show them as they come, and the launcher is told."""
        changed = False
        for name, window in self.windows.items():
            changed |= window.set_warnings(self.warnings(name))
        if changed:
            self.signals.changed.emit()

    def running(self) -> list[str]:
        return [n for n, r in self.runners.items() if r.state is not RunState.STOPPED]

    def runner(self, name: str) -> ContextRunner:
        if name not in self.runners:
            self.runners[name] = ContextRunner(self.paths, name, prepare_lock=self._prepare_lock)
        return self.runners[name]

    def prepare_spares(self, first: str | None = None) -> None:
        """Have every context's next overlay made in the background (``first`` first, with
        a standby QEMU: see ``use_standby_for``), so that Start only launches QEMU and
        restores — or, with the standby, only restores."""
        try:
            names = sorted(c.name for c in ContextStore(self.paths).list())
        except BlankSlateError as exc:
            log.warning("no spare overlays: %s", exc)
            return
        if not names:
            return
        first = first if first in names else names[0]
        self.use_standby_for(first)
        for name in sorted(names, key=lambda n: n != first):
            self.runner(name).prepare_spare_soon()

    def use_standby_for(self, name: str) -> None:
        """Keep a paused QEMU ready for ``name``, the most recently used context, only."""
        for other, runner in self.runners.items():
            if other != name:
                runner.set_standby(False)
        self.runner(name).set_standby(True)

    def probe_accel(self) -> Job:
        """Find out (in the background) whether to show the no-KVM warning."""
        job = ProbeAccelJob(self.paths)
        job.finished.connect(self.signals.tcg_detected.emit)
        return self.submit(job)

    # ------------------------------------------------------------------ job plumbing

    def submit(self, job: Job, progress_title: str | None = None, *,
               quiet: bool = False) -> Job:
        """Run a job; its errors become dialogs (unless ``quiet``: the caller shows them);
        with a title, a progress dialog (cancel)."""
        if not quiet:
            job.failed.connect(self._on_job_failed)
        job.ended.connect(self.signals.changed)
        if progress_title is not None:
            self._progress_dialog(job, progress_title)
        self.jobs.submit(job)
        self.signals.changed.emit()
        return job

    def _on_job_failed(self, message: str) -> None:
        if message != CANCELLED:
            self.signals.error.emit(message)

    def _progress_dialog(self, job: Job, title: str) -> QProgressDialog:
        dialog = QProgressDialog(title, "Cancel" if job.cancellable else "", 0, 0)
        dialog.setWindowTitle("Blank Slate")
        if not job.cancellable:
            dialog.setCancelButton(None)
        dialog.setWindowModality(Qt.WindowModality.NonModal)
        dialog.setMinimumDuration(500)  # quick jobs never flash a dialog
        dialog.setAutoClose(False)
        dialog.canceled.connect(job.cancel)

        def show(phase: str, percent: int) -> None:
            dialog.setLabelText(f"{title}\n{phase}")
            dialog.setMaximum(100 if percent >= 0 else 0)
            dialog.setValue(max(percent, 0))

        job.progress.connect(show)
        job.ended.connect(dialog.reset)
        job.ended.connect(dialog.deleteLater)
        return dialog

    def _show_error(self, message: str) -> None:
        if self.quitting:
            return
        box = show_error(message, self.windows.get(next(iter(self.windows), "")))
        # Without a session window it has no parent: only a reference keeps it on screen.
        # Qt deletes it once closed; the reference goes at the next error (dropping it in
        # its own finished() would delete it in the middle of that signal).
        box.finished.connect(box.deleteLater)
        self._error_boxes = [b for b in self._error_boxes if shiboken6.isValid(b)] + [box]

    # ------------------------------------------------------------------ displays

    def _attach_display(self, name: str, client: rfb.RfbClient) -> None:
        self._detach_display(name)
        job = DisplayJob(name, client)
        job.failed.connect(lambda msg: self._on_display_lost(name, client, msg))
        self.displays[name] = job
        self.jobs.submit(job)

    def _detach_display(self, name: str) -> None:
        job = self.displays.pop(name, None)
        if job is not None:
            job.client.close()  # run() returns normally after close()

    def _on_display_lost(self, name: str, client: rfb.RfbClient, message: str) -> None:
        current = self.displays.get(name)
        if current is None or current.client is not client or message == CANCELLED:
            return  # an old connection (quick reset, end): expected
        self.displays.pop(name, None)
        if self.state(name) is RunState.RUNNING:
            # QEMU went away under a running session: nothing to keep, clean up.
            self.signals.error.emit(f"“{name}”: {message}")
            self._end(name, keep=False)

    # ------------------------------------------------------------------ actions

    def open_context(self, name: str, resume: bool | None = None) -> Job | None:
        """Start a context's session and show its window; raise the window if running.
        A suspended session is resumed or discarded as ``resume`` says (None: ask)."""
        window = self.windows.get(name)
        if window is not None:
            window.showNormal()
            window.raise_()
            window.activateWindow()
            return None
        if self.state(name) is not RunState.STOPPED:
            return None
        try:
            profile = ContextStore(self.paths).get(name).profile
        except BlankSlateError as exc:
            self.signals.error.emit(str(exc))
            return None
        if not self._may_start(name, profile.image, resume):
            return None
        runner = self.runner(name)
        runner.expire_passphrase(AppSettings.load(self.paths).passphrase_idle_minutes * 60)
        if runner.passphrase is None and key_store(self.paths).is_protected(name):
            runner.passphrase = ask_passphrase(name)
            if runner.passphrase is None:
                return None
        self.use_standby_for(name)  # the most recently used context gets the standby
        job = StartSessionJob(runner, resume=resume)
        job.finished.connect(lambda client: self._show_session(name, profile, client))
        job.failed.connect(lambda _m: self._forget_passphrase_on_auth(name))
        return self.submit(job, f"Starting “{name}”…")

    def _may_start(self, name: str, image: str, resume: bool | None) -> bool:
        """False (and the user asked what to do) if the image is missing or the context
        has a suspended session nobody chose to resume or discard yet."""
        if image not in {i.name for i in ImageStore(self.paths).list()}:
            self._offer_build(name, image)
            return False
        if resume is None and ContextStore(self.paths).get(name).suspended_path.exists():
            ask_resume(name, lambda resume: self.open_context(name, resume))
            return False
        return True

    def _forget_passphrase_on_auth(self, name: str) -> None:
        # A wrong passphrase must be asked again next time, not retried forever.
        if self.state(name) is RunState.STOPPED:
            self.runner(name).passphrase = None

    def _show_session(self, name: str, profile: Profile, client: rfb.RfbClient) -> None:
        session = self.runner(name).session
        tcg = session is not None and session.accel is Accel.TCG
        window = SessionWindow(name, profile.color, client, self.signals, tcg=tcg,
                               recipe=session.image.recipe if session is not None else None,
                               clipboard=profile.clipboard, search=profile.search,
                               window_state=self.window_state)
        self.windows[name] = window
        window.set_warnings(self.warnings(name))
        self._attach_display(name, client)
        window.show()
        window.display.setFocus()
        self.signals.changed.emit()

    def _offer_build(self, name: str, image: str) -> None:
        ask(self.windows.get(name), "Blank Slate",
            f"“{name}” uses the image “{image}”, which is not built yet.\n"
            "Build it now? This downloads packages and can take minutes.",
            lambda: self.build_image(image), name="offerBuild", default_no=False)

    def build_image(self, image: str) -> Job:
        job = BuildImageJob(self.paths, image)
        job.finished.connect(lambda _i: self.signals.notify.emit(
            "Image built", f"The image “{image}” is ready."))
        job.failed.connect(lambda msg: self._notify_failure(f"Building “{image}” failed", msg))
        return self.submit(job, f"Building image “{image}”…")

    def update_old_images(self, now: float | None = None) -> list[Job]:
        """Rebuild, in the background, every image older than ``image_update_days``
        (config/app.toml; 0: never): sessions go on, the next ones use the new build."""
        days = AppSettings.load(self.paths).image_update_days
        jobs: list[Job] = []
        if days <= 0:
            return jobs
        for image in ImageStore(self.paths).list():
            with contextlib.suppress(BlankSlateError, OSError):
                if (now or time.time()) - image.built_at > days * 86400:
                    job = BuildImageJob(self.paths, image.name, update=True)
                    job.finished.connect(lambda _i, n=image.name: self.signals.notify.emit(
                        "Image updated", f"“{n}” has current updates: new sessions use it."))
                    job.failed.connect(lambda msg, n=image.name: self._notify_failure(
                        f"Updating “{n}” failed", msg))
                    jobs.append(self.submit(job, f"Updating image “{image.name}”…"))
        return jobs

    def reset_context(self, name: str) -> Job | None:
        """Start a context kept on an earlier image fresh on the new one: its kept session
        is securely erased, its persistent folder kept (``session.updates.reset_context``)."""
        if self.state(name) is not RunState.STOPPED:
            self.signals.error.emit(f"“{name}” has a running session: stop it first")
            return None
        job = ResetContextJob(self.paths, name, self.runners.get(name))
        job.finished.connect(lambda _wiped: self._context_reset(name))
        job.failed.connect(lambda msg: self._notify_failure(
            f"Starting “{name}” fresh failed", msg))
        return self.submit(job, f"Starting “{name}” fresh on the new image…")

    def _context_reset(self, name: str) -> None:
        self.runner(name).prepare_spare_soon()
        self.signals.notify.emit(f"“{name}” is on the new image",
                                 "Its kept session was erased; its persistent folder is kept.")

    def _notify_failure(self, title: str, message: str) -> None:
        if message != CANCELLED and not self.quitting:
            self.signals.notify.emit(title, message)

    def quick_reset(self, name: str) -> Job | None:
        """Discard the session and be on a clean one at once (the window stays)."""
        if self.state(name) is RunState.STOPPED:
            return self.open_context(name)
        if self.state(name) is not RunState.RUNNING:
            return None
        self._detach_display(name)
        job = QuickResetJob(self.runner(name))
        job.finished.connect(lambda client: self._on_reset(name, client))
        window = self.windows.get(name)
        if window is not None:
            window.follow(job)
        return self.submit(job)

    def _on_reset(self, name: str, client: rfb.RfbClient) -> None:
        window = self.windows.get(name)
        if window is not None:
            window.replace_client(client)
        self._attach_display(name, client)
        seconds = self.runner(name).last_reset_s
        if window is not None and seconds is not None:
            window.statusBar().showMessage(f"Clean session in {seconds:.2f} s", 5000)
        self.transfers.session_replaced(name)

    def request_stop(self, name: str) -> ExitDialog | None:
        """End a session: ask keep/discard, unless the context has an exit default."""
        if self.state(name) is not RunState.RUNNING or name in self.exit_dialogs:
            return self.exit_dialogs.get(name)
        default = ContextStore(self.paths).get(name).profile.on_exit
        if default is not ExitDefault.ASK:
            self._end(name, keep=default is ExitDefault.KEEP)
            return None
        session = self.runner(name).session
        changed = session.changed_bytes() if session is not None else 0
        dialog = ExitDialog(name, changed, self.windows.get(name))
        self.exit_dialogs[name] = dialog
        self.transfers.check_unsaved(name, dialog)

        def chosen(choice: ExitChoice) -> None:
            if choice is ExitChoice.CANCEL:
                self.exit_dialogs.pop(name, None)
                dialog.deleteLater()
                return
            dialog.follow(self._end(name, keep=choice is ExitChoice.KEEP))

        dialog.chosen.connect(chosen)
        dialog.finished.connect(lambda _r: self._drop_exit_dialog(name, dialog))
        dialog.open()
        return dialog

    def _drop_exit_dialog(self, name: str, dialog: ExitDialog) -> None:
        if self.exit_dialogs.get(name) is dialog and dialog.choice() is not None:
            del self.exit_dialogs[name]
            dialog.deleteLater()

    def suspend(self, name: str) -> Job | None:
        """Save the session apart and close it (Session.suspend); Start resumes it."""
        if self.state(name) is not RunState.RUNNING:
            return None
        return self._end(name, keep=False, suspend=True)

    def _end(self, name: str, keep: bool, *, suspend: bool = False) -> Job:
        self._detach_display(name)  # the last frame stays on screen meanwhile
        job = EndSessionJob(self.runner(name), keep, suspend=suspend)
        job.finished.connect(lambda report: self._on_ended(name, report))
        job.finished.connect(lambda report: self._notify_ended(name, report))
        job.failed.connect(lambda _m: self._on_end_failed(name))
        verb = "Suspending" if suspend else "Keeping" if keep else "Erasing"
        job.failed.connect(lambda msg: self._notify_failure(f"{verb} “{name}” failed", msg))
        window = self.windows.get(name)
        if window is not None:
            window.follow(job)
        return self.submit(job)

    def _notify_ended(self, name: str, report: EndReport) -> None:
        if self.quitting:
            return
        if report.on_exit == "keep":
            self.signals.notify.emit(f"“{name}” kept",
                                     f"{human_bytes(report.changed_bytes)} of changes kept; "
                                     "the next session starts from here.")
        elif report.on_exit == "suspend":
            self.signals.notify.emit(f"“{name}” suspended",
                                     "Start it again to resume where it was.")
        elif report.on_exit == "discard":
            self.signals.notify.emit(f"“{name}” erased",
                                     f"The session's changes were securely erased "
                                     f"({human_bytes(report.wiped_bytes)} overwritten).")

    def _on_ended(self, name: str, report: EndReport) -> None:
        log.info("session of %s ended: %s", name, report)
        window = self.windows.pop(name, None)
        if window is not None:
            window.close_for_real()
            window.deleteLater()

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """``blankslate session list/stop/suspend`` from another process (session.control)."""
        if request.get("op") == "info":
            return {"sessions": [
                {"context": n, "memory_mib": r.session.memory_mib,
                 "changed_bytes": r.session.changed_bytes(), "state": r.session.state.value}
                for n, r in self.runners.items()
                if r.session is not None and r.state is RunState.RUNNING]}
        if request.get("op") == "show":  # `blankslate` from the menu while the app runs
            self.signals.show_launcher_requested.emit()
            return {"ok": True}
        name, how = str(request.get("context")), request.get("how")
        if request.get("op") == "open":  # as if the user clicked Start / Open (and a link)
            ContextStore(self.paths).get(name)
            url = str(request.get("url") or "")
            if self.state(name) is RunState.RUNNING:
                self.open_context(name)  # raises its window
                if url:
                    self.transfers.open_url(name, url)
                return {"ok": True}
            job = self.open_context(name)
            if job is not None and url:
                job.finished.connect(lambda _c: self.transfers.open_url(name, url))
            return {"ok": True}
        if request.get("op") != "stop" or how not in HOWS:
            raise UsageError(f"unknown request {request.get('op')!r}")
        if self.state(name) is not RunState.RUNNING:
            raise UsageError(f"“{name}” has no running session in this app")
        self._detach_display(name)
        try:
            report = await self.runner(name).stop(keep=how == "keep", suspend=how == "suspend")
        except BlankSlateError:
            self._on_end_failed(name)
            raise
        self._on_ended(name, report)
        return {"ok": True}

    def _on_end_failed(self, name: str) -> None:
        window = self.windows.get(name)
        session = self.runner(name).session
        if session is not None and self.state(name) is RunState.RUNNING and window is not None:
            # A failed keep resumes the guest: reconnect so the user can carry on.
            job = self.jobs.submit(ReconnectDisplayJob(name, session))
            job.finished.connect(lambda client: self._on_reset(name, client))
        else:
            self._on_ended(name, EndReport("failed", 0, 0, 0.0))

    def confirm_stop_all(self) -> None:
        running = self.running()
        if running:
            ask(None, "Stop all sessions",
                f"Discard {', '.join(running)}? Everything they changed is securely erased.",
                self.stop_all, name="confirmStopAll")

    def stop_all(self, *, suspend: bool = False) -> Job:
        """Discard (or ``suspend``) every session (and erase the prepared spare overlays)."""
        for name in list(self.displays):
            self._detach_display(name)
        job = StopAllJob(list(self.runners.values()), erase_spares=self.quitting,
                         suspend=suspend)
        job.ended.connect(self._close_all_windows)
        return self.submit(job, "Securely erasing all sessions…")

    def _close_all_windows(self) -> None:
        for name in list(self.windows):
            if self.state(name) is RunState.STOPPED:
                self._on_ended(name, EndReport("discard", 0, 0, 0.0))

    def remove_context(self, name: str) -> Job | None:
        if self.state(name) is not RunState.STOPPED:
            self.signals.error.emit(f"“{name}” has a running session: stop it first")
            return None
        runner = self.runners.pop(name, None)
        return self.submit(RemoveContextJob(self.paths, name, runner), f"Removing “{name}”…")

    def create_context(self, profile: Profile, passphrase: str) -> None:
        try:
            ContextStore(self.paths).create(profile)
            if passphrase:
                key_store(self.paths).create(profile.name, passphrase)
        except BlankSlateError as exc:
            self.signals.error.emit(str(exc))
        else:
            self.runner(profile.name).prepare_spare_soon()
        self.signals.changed.emit()

    def change_settings(self, change: SettingsChange) -> Job | None:
        """Apply a context's Settings… (from its next session; a rename only when stopped)."""
        name = change.name
        renaming = change.new_name != name
        if renaming and self.state(name) is not RunState.STOPPED:
            self.signals.error.emit(f"“{name}” has a running session: stop it to rename it")
            return None
        runner = self.runners.pop(name, None) if renaming else self.runners.get(name)
        if change.new_passphrase is not None and runner is not None:
            runner.passphrase = None  # asked again at the next start
        job = ChangeSettingsJob(self.paths, change, runner if renaming else None)
        job.finished.connect(self._settings_changed)
        return self.submit(job, f"Saving the settings of “{name}”…")

    def _settings_changed(self, name: str) -> None:
        self.runner(name).prepare_spare_soon()
        self.signals.changed.emit()

    async def shutdown(self, *, suspend: bool = False) -> None:
        """Discard everything still running (or ``suspend`` it: a logout, SIGTERM), erase
        spares, close windows (quit, tests)."""
        self.quitting = True
        self._warning_timer.stop()  # nothing to warn about any more
        for name in list(self.exit_dialogs):
            self.exit_dialogs.pop(name).deleteLater()
        await self.jobs.wait_all(ignore=DisplayJob)  # let keeps/erases in flight finish
        self.stop_all(suspend=suspend)
        for name in list(self.displays):
            self._detach_display(name)
        await self.jobs.wait_all()
        for window in list(self.windows.values()):
            window.close_for_real()
        self.windows.clear()

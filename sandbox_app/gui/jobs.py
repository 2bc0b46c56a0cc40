"""The app's long operations, one class per job; each runs core coroutines only.

Jobs never touch widgets: the controller (``app.App``) listens to their signals.
Over 400 lines as a catalogue: many small classes of one shape, not one long idea.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..core.backup import forget_backup
from ..core.contexts import (
    ContextStore,
    Journal,
    async_context_lock,
    key_store,
    rename_context,
)
from ..core.errors import BlankSlateError, UsageError
from ..core.guest import (
    GuestAgent,
    GuestFile,
    copy_from_guest,
    copy_to_guest,
    list_downloads,
    move_in_guest,
    rfb,
    sanitize_name,
    save_to_host,
    send_to_guest,
)
from ..core.images import Image, ImageStore
from ..core.session import ContextRunner, EndReport, Session, SessionState, accel_warning
from ..core.session.updates import reset_context, update_image
from ..core.storage import Paths
from .asyncbridge import Job, in_thread
from .format import human_bytes
from .settings_dialog import SettingsChange


async def connect_display(session: Session) -> rfb.RfbClient:
    """Connect to the session's VNC socket (QEMU serves it without auth, in a 0700 dir)."""
    return await rfb.RfbClient.connect(session.vnc_path)


class StartSessionJob(Job):
    """Restore a context into a new session and connect to its display."""

    cancellable = True  # Session.start erases what it made if cancelled

    def __init__(self, runner: ContextRunner, *, resume: bool | None = None) -> None:
        super().__init__(f"start-{runner.name}")
        self.runner = runner
        self.resume = resume  # a suspended session: True resume it, False discard it first

    async def work(self) -> rfb.RfbClient:
        session = await self.runner.start(self.report, resume=self.resume)
        try:
            return await connect_display(session)
        except BlankSlateError:
            await self.runner.stop(keep=False)  # a session nobody can see is no use
            raise


class ReconnectDisplayJob(Job):
    """Connect again to a session's display (after a failed keep resumed the guest)."""

    def __init__(self, name: str, session: Session) -> None:
        super().__init__(f"reconnect-{name}")
        self.session = session

    async def work(self) -> rfb.RfbClient:
        return await connect_display(self.session)


class QuickResetJob(Job):
    """Discard the session and restore a clean one on the overlay prepared ahead of time."""

    def __init__(self, runner: ContextRunner) -> None:
        super().__init__(f"reset-{runner.name}")
        self.runner = runner

    async def work(self) -> rfb.RfbClient:
        session = await self.runner.quick_reset(self.report)
        return await connect_display(session)


class EndSessionJob(Job):
    """End a session: keep its changes in the context, discard them (secure erase), or
    suspend it."""

    def __init__(self, runner: ContextRunner, keep: bool, *, suspend: bool = False) -> None:
        how = "suspend" if suspend else "keep" if keep else "discard"
        super().__init__(f"{how}-{runner.name}")
        self.runner = runner
        self.keep = keep
        self.suspend = suspend

    async def work(self) -> EndReport:
        return await self.runner.stop(self.keep, self.report, suspend=self.suspend)


class StopAllJob(Job):
    """Discard every running session (tray "Stop all"; quitting also erases the spares), or
    ``suspend`` each (a logout, SIGTERM): what cannot be suspended is discarded."""

    def __init__(self, runners: list[ContextRunner], *, erase_spares: bool,
                 suspend: bool = False) -> None:
        super().__init__("stop-all")
        self.runners = runners
        self.erase_spares = erase_spares
        self.suspend = suspend

    async def work(self) -> int:
        errors = 0
        for runner in self.runners:
            try:
                if self.suspend and runner.session is not None:
                    self.report(f"suspending {runner.name}", None)
                    try:
                        await runner.stop(keep=False, suspend=True)
                    except BlankSlateError:
                        errors += 1
                        if runner.session is not None:  # still running: never left behind
                            await runner.stop(keep=False)
                self.report(f"securely erasing {runner.name}", None)
                if self.erase_spares:
                    await runner.close()
                elif runner.session is not None:
                    await runner.stop(keep=False)
            except BlankSlateError:
                errors += 1
        return errors


class ResyncJob(Job):
    """After the host slept: every running guest gets its clock and network lease again."""

    def __init__(self, runners: list[ContextRunner]) -> None:
        super().__init__("resync")
        self.runners = runners

    async def work(self) -> int:
        done = 0
        for runner in self.runners:
            session = runner.session
            if session is not None and session.state is SessionState.RUNNING:
                with contextlib.suppress(BlankSlateError):
                    await session.resync()
                    done += 1
        return done


class BuildImageJob(Job):
    """Build an image from its recipe and make its golden snapshot point."""

    cancellable = True  # the recipe runner kills its builder and removes the work dir

    def __init__(self, paths: Paths, image: str, *, update: bool = False) -> None:
        super().__init__(f"build-{image}")
        self.paths = paths
        self.image = image
        self.update = update  # rebuild with current packages (see session.updates)

    async def work(self) -> Image:
        if self.update:
            return await update_image(self.paths, self.image, self.report)
        return await ImageStore(self.paths).build(self.image, progress=self.report)


class RemoveContextJob(Job):
    """Remove a context: securely erase its data and its key, then its profile."""

    def __init__(self, paths: Paths, name: str, runner: ContextRunner | None) -> None:
        super().__init__(f"remove-{name}")
        self.paths = paths
        self.context = name
        self.runner = runner

    async def work(self) -> int:
        if self.runner is not None:
            await self.runner.close()  # its spare overlay is journaled under the context
        async with async_context_lock(self.paths, self.context):
            # Another process (say `blankslate run`) may have a session of it open.
            if any(r.context == self.context and r.owner_alive()
                   for r in Journal(self.paths).records()):
                raise UsageError(f"“{self.context}” has a running session: stop it first")
            self.report(f"securely erasing {self.context}", None)
            wiped = await in_thread(ContextStore(self.paths).remove, self.context)
        with contextlib.suppress(BlankSlateError):  # a context without a key is fine
            await in_thread(key_store(self.paths).remove, self.context)
        forget_backup(self.paths, self.context)
        return wiped


class ChangeSettingsJob(Job):
    """Apply a context's new settings: passphrase, then profile, then name (a rename
    re-binds its files to the new name: seconds for a large saved state)."""

    def __init__(self, paths: Paths, change: SettingsChange,
                 runner: ContextRunner | None) -> None:
        super().__init__(f"settings-{change.name}")
        self.paths = paths
        self.context = change.name
        self.profile = change.profile
        self.new_name = change.new_name
        self.passphrase = change.passphrase
        self.new_passphrase = change.new_passphrase  # None: unchanged; "": remove
        self.runner = runner  # closed before a rename

    async def work(self) -> str:
        """Returns the context's name now."""
        keys = key_store(self.paths)
        passphrase = self.passphrase
        if self.new_passphrase is not None:
            self.report("changing the passphrase", None)
            if keys.exists(self.context):
                await in_thread(keys.change_passphrase, self.context, passphrase,
                                self.new_passphrase or None)
            else:
                await in_thread(keys.create, self.context, self.new_passphrase or None)
            passphrase = self.new_passphrase or None
        await in_thread(ContextStore(self.paths).update, self.profile)
        if self.new_name == self.context:
            return self.context
        if self.runner is not None:
            await self.runner.close()  # its next session, made ready, is bound to the name
        self.report(f"renaming {self.context} to {self.new_name}", None)
        await in_thread(rename_context, self.paths, self.context, self.new_name, passphrase)
        forget_backup(self.paths, self.context, self.new_name)  # "backed up …" follows it
        return self.new_name


class ResetContextJob(Job):
    """Start a context fresh on its image's current build (``session.updates.reset_context``):
    its kept session is securely erased, its persistent folder kept."""

    def __init__(self, paths: Paths, name: str, runner: ContextRunner | None) -> None:
        super().__init__(f"reset-image-{name}")
        self.paths = paths
        self.context = name
        self.runner = runner

    async def work(self) -> int:
        if self.runner is not None:
            await self.runner.close()  # its next overlay (and standby) sit on the old chain
        self.report(f"securely erasing the kept session of {self.context}", None)
        return await reset_context(self.paths, self.context)


class DisplayJob(Job):
    """Receive a session's screen updates until the display closes."""

    cancellable = True

    def __init__(self, name: str, client: rfb.RfbClient) -> None:
        super().__init__(f"display-{name}")
        self.client = client

    async def work(self) -> None:
        try:
            await self.client.run(max_fps=60)
        finally:
            self.client.close()


class ProbeAccelJob(Job):
    """Find out whether sessions will run without KVM (the probe boots a kernel: seconds)."""

    def __init__(self, paths: Paths) -> None:
        super().__init__("probe-accel")
        self.paths = paths

    async def work(self) -> bool:
        images = {c.profile.image for c in ContextStore(self.paths).list()}
        for image in sorted(images):
            if await in_thread(accel_warning, self.paths, image):
                return True
        return False


# ------------------------------------------------------------------ files and clipboard


async def _agent(session: Session) -> GuestAgent:
    return await session.ready()


class OpenUrlJob(Job):
    """Open a page in the session's browser (it shows on the display as it loads)."""

    def __init__(self, name: str, session: Session, url: str) -> None:
        super().__init__(f"open-url-{name}")
        self.session = session
        self.url = url

    async def work(self) -> None:
        await self.session.open_url(self.url, wait=False)


class ClipboardToGuestJob(Job):
    """Put host clipboard text into the guest clipboard (if the context's policy allows)."""

    def __init__(self, name: str, session: Session, text: str) -> None:
        super().__init__(f"clipboard-in-{name}")
        self.session = session
        self.text = text

    async def work(self) -> int:
        s = self.session
        return await copy_to_guest(await _agent(s), s.image.recipe, s.context.profile.clipboard,
                                   self.text)


class ClipboardFromGuestJob(Job):
    """Read the guest clipboard's text (if the context's policy allows)."""

    def __init__(self, name: str, session: Session) -> None:
        super().__init__(f"clipboard-out-{name}")
        self.session = session

    async def work(self) -> str:
        s = self.session
        return await copy_from_guest(await _agent(s), s.image.recipe, s.context.profile.clipboard)


class ListDownloadsJob(Job):
    """The files in the guest's Downloads folder."""

    def __init__(self, name: str, session: Session, timeout: float = 30.0) -> None:
        super().__init__(f"list-downloads-{name}")
        self.session = session
        self.timeout = timeout

    async def work(self) -> list[GuestFile]:
        """Downloads, and the persistent folder when the session has it."""
        agent = await _agent(self.session)
        files = await list_downloads(agent, self.session.image.recipe.downloads_dir,
                                     self.timeout)
        if self.session.data is not None:
            files += await list_downloads(agent, self.session.persistent_dir, self.timeout)
        return files


class MoveToPersistentJob(Job):
    """Move downloads into the guest's persistent folder (they outlive the session)."""

    def __init__(self, name: str, session: Session, items: list[GuestFile]) -> None:
        super().__init__(f"move-persistent-{name}")
        self.session = session
        self.items = items

    async def work(self) -> int:
        if self.session.data is None:
            raise UsageError("this session has no persistent folder")
        agent = await _agent(self.session)
        downloads = self.session.image.recipe.downloads_dir
        for item in self.items:
            await move_in_guest(agent, item, downloads, self.session.persistent_dir)
        return len(self.items)


class UnsavedDownloadsJob(Job):
    """The (sanitised) names of the guest's downloads that are not in ``saved``."""

    def __init__(self, name: str, session: Session, saved: set[GuestFile],
                 timeout: float) -> None:
        super().__init__(f"unsaved-downloads-{name}")
        self.session = session
        self.saved = saved
        self.timeout = timeout

    async def work(self) -> list[str]:
        folder = self.session.image.recipe.downloads_dir
        files = await list_downloads(await _agent(self.session), folder, self.timeout)
        return [sanitize_name(f.name) for f in files if f not in self.saved]


class SaveDownloadsJob(Job):
    """Copy guest downloads into a host folder, streamed, never overwriting a host file."""

    cancellable = True  # save_to_host erases its partial file when cancelled

    def __init__(self, name: str, session: Session, items: list[GuestFile],
                 target: Path) -> None:
        super().__init__(f"save-downloads-{name}")
        self.session = session
        self.items = items
        self.target = target
        self.saved: list[tuple[GuestFile, Path]] = []  # also read after a failure

    async def work(self) -> list[tuple[GuestFile, Path]]:
        agent = await _agent(self.session)
        folder = self.session.image.recipe.downloads_dir
        total = max(sum(item.size for item in self.items), 1)
        before = 0
        for item in self.items:
            label = sanitize_name(item.name)

            def progress(done: int, size: int, label: str = label, before: int = before
                         ) -> None:
                self.report(f"{label}: {human_bytes(done)} of {human_bytes(size)}",
                            min((before + done) / total, 1.0))

            path = await save_to_host(agent, item.folder or folder, item, self.target,
                                      progress)
            self.saved.append((item, path))
            before += item.size
        return self.saved


class SendFilesJob(Job):
    """Copy host files into the guest's Downloads folder."""

    cancellable = True  # send_to_guest removes its partial guest file

    def __init__(self, name: str, session: Session, files: list[Path]) -> None:
        super().__init__(f"send-files-{name}")
        self.session = session
        self.files = files
        self.sent: list[GuestFile] = []  # as they are in the guest; also read after a failure

    async def work(self) -> list[GuestFile]:
        agent = await _agent(self.session)
        folder = self.session.image.recipe.downloads_dir
        for source in self.files:
            def progress(done: int, size: int, name: str = source.name) -> None:
                self.report(f"{name}: {human_bytes(done)} of {human_bytes(size)}",
                            done / size if size else None)

            size = source.stat().st_size if source.is_file() else 0
            guest_path = await send_to_guest(agent, source, folder, progress)
            self.sent.append(GuestFile(guest_path.rsplit("/", 1)[-1], size))
        return self.sent



"""One context's live session, plus a spare overlay so that Start and quick reset are instant.

The desktop app keeps one ``ContextRunner`` per context. Formatting a LUKS overlay costs
~2 s, so every context keeps the next session's overlay prepared: made in the background when
the app starts (one context after another: ``prepare_lock`` is shared by the app's runners),
kept across a discard (the context's chain is unchanged), remade at once after a keep (the
spare sat on the old chain) and after a start or quick reset uses it. A Start then only
launches QEMU and restores the snapshot onto the spare. Spare keys live in memory only; spares
are journaled, erased on close and by crash recovery like any overlay. Short of disk space,
no spare is made (a Start makes its own overlay, as without one): never a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Coroutine
from enum import Enum
from typing import Any

from ..contexts import Context, ContextStore, key_store
from ..errors import BlankSlateError
from ..images import ImageStore
from ..progress import Progress, no_progress
from ..storage import Paths
from ..vm import Accel
from .overlay import PreparedOverlay, discard_prepared, prepare_overlay
from .session import EndReport, Session, SessionState, discard_suspended
from .settings import AppSettings, standby_allowed
from .volume import prepare_volume

log = logging.getLogger(__name__)


class RunState(Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    KEEPING = "keeping"
    WIPING = "wiping"


SPARE_MIN_FREE = 512 << 20
"""No spare overlay is made when the data disk has less free space than this."""


class ContextRunner:
    """Start, stop, keep, discard and quick-reset the sessions of one context."""

    def __init__(self, paths: Paths, name: str, *,
                 prepare_lock: asyncio.Lock | None = None) -> None:
        self.paths = paths
        self.name = name
        self._prepare_lock = prepare_lock or asyncio.Lock()
        self.session: Session | None = None
        self.state = RunState.STOPPED
        self._passphrase: str | None = None
        self._passphrase_used = time.monotonic()
        self.last_reset_s: float | None = None
        self.standby_wanted = False  # the app sets it for its most recently used context
        self._spare: PreparedOverlay | None = None
        self._standby: Session | None = None  # QEMU launched on the spare, paused
        self._spare_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[object]] = set()

    @property
    def passphrase(self) -> str | None:
        """The context's passphrase as the user gave it (kept to start its next sessions)."""
        return self._passphrase

    @passphrase.setter
    def passphrase(self, value: str | None) -> None:
        self._passphrase = value
        self._passphrase_used = time.monotonic()

    def expire_passphrase(self, idle_s: float, now: float | None = None) -> bool:
        """Forget the passphrase when no session has run for ``idle_s`` (and drop the
        standby, which holds the unlocked key): the user is asked again. True if forgotten."""
        if self._passphrase is None or self.session is not None:
            return False
        if (now if now is not None else time.monotonic()) - self._passphrase_used < idle_s:
            return False
        self._passphrase = None
        if self._standby is not None:
            standby, self._standby = self._standby, None
            self._spawn(standby.discard(), "drop-standby")
        return True

    async def start(self, progress: Progress = no_progress, *,
                    resume: bool | None = None) -> Session:
        """Start a session (from the standby or spare when there is one). A context with a
        suspended session needs ``resume``: True continues it, False erases it first."""
        if self.session is not None:
            return self.session
        self.state = RunState.STARTING
        try:
            ctx = ContextStore(self.paths).get(self.name)
            if resume is False:
                progress("securely erasing the suspended session", None)
                await discard_suspended(self.paths, ctx)
            session = None if resume else await self._take_standby(ctx)
            if resume:  # on the suspended chain: the spare, if it was made there
                session = await Session.standby(self.paths, ctx, prepared=await self._take_spare(),
                                                passphrase=self.passphrase, resume=True,
                                                progress=progress)
            elif session is None:
                session = await Session.standby(self.paths, ctx, prepared=await self._take_spare(),
                                                passphrase=self.passphrase, progress=progress)
            await session.run(progress)
            self.session = session
        except BaseException:
            self.state = RunState.STOPPED
            raise
        self.state = RunState.RUNNING
        self.prepare_spare_soon()
        return self.session

    async def stop(self, keep: bool, progress: Progress = no_progress, *,
                   suspend: bool = False) -> EndReport:
        """End the session: keep its changes in the context, or securely discard them —
        or ``suspend`` it (saved apart from the kept state, resumed by the next start)."""
        session = self.session
        if session is None:
            raise BlankSlateError(f"context '{self.name}' has no running session")
        if keep or suspend:
            await self._cancel_spare()  # spare and standby sit on the chain a keep replaces
        self.state = RunState.KEEPING if keep or suspend else RunState.WIPING
        progress("suspending" if suspend else "keeping changes" if keep else "securely erasing",
                 None)
        try:
            report = await (session.suspend() if suspend else session.keep() if keep
                            else session.discard())
        except BaseException:
            # Never a hidden VM: the session runs again (the caller tells the user why), or
            # it is discarded.
            if session.state is SessionState.RUNNING:
                self.state = RunState.RUNNING
                self.prepare_spare_soon()  # a keep dropped it
                raise
            with contextlib.suppress(BlankSlateError, OSError):
                await asyncio.shield(session.discard())
            self.session = None
            self.state = RunState.STOPPED
            raise
        self.session = None
        self.state = RunState.STOPPED
        self._passphrase_used = time.monotonic()  # idle from now
        self.prepare_spare_soon()
        progress("done", 1.0)
        return report

    async def quick_reset(self, progress: Progress = no_progress) -> Session:
        """Throw the session away and be back on a clean one (from the spare overlay)."""
        t0 = time.monotonic()
        old = self.session
        self.session = None
        if old is not None and old.machine is not None:
            await old.machine.kill()  # the old VM stops at once; erasing comes after
        session = await self.start(progress)
        if old is not None:
            self._spawn(old.discard(), "erase-old-session")
        self.last_reset_s = time.monotonic() - t0
        return session

    async def close(self) -> None:
        """Discard any session and the spare (app shutdown)."""
        if self.session is not None:
            await self.stop(keep=False)
        await self._cancel_spare()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -------------------------------------------------------------- the spare overlay

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        task.set_name(f"{self.name}-{name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def spare_ready(self) -> bool:
        """The next Start has its overlay already (it only launches and restores)."""
        return self._spare is not None or self.standby_ready

    @property
    def standby_ready(self) -> bool:
        """The next Start has its QEMU waiting already (it only loads the state)."""
        return self._standby is not None

    def set_standby(self, wanted: bool) -> None:
        """Keep (or stop keeping) a paused QEMU ready for the next Start."""
        self.standby_wanted = wanted
        if wanted:
            self.prepare_spare_soon()
        elif self._standby is not None:
            standby, self._standby = self._standby, None
            self._spawn(standby.discard(), "drop-standby")
            self.prepare_spare_soon()  # a plain spare instead

    def prepare_spare_soon(self) -> None:
        """Prepare the next session's overlay (and standby QEMU, if wanted) in the
        background, unless there is one."""
        if self._standby is None and self._spare_task is None and (
                self._spare is None or self.standby_wanted):
            # ensure_future, not create_task: also from a Qt slot outside a running task
            self._spare_task = asyncio.ensure_future(self._prepare_spare())
            self._spare_task.set_name(f"{self.name}-prepare-overlay")

    async def _prepare_spare(self) -> None:
        try:
            async with self._prepare_lock:  # one LUKS format at a time, app-wide
                ctx = ContextStore(self.paths).get(self.name)
                if self._spare is not None:
                    await self._launch_standby(ctx)
                    return
                if self.session is not None:
                    image, point = self.session.image, self.session.point
                else:
                    store = ImageStore(self.paths)
                    image = store.get(ctx.profile.image)
                    ready = await asyncio.to_thread(
                        store.ready_snapshot, image, store.accel_for(image),
                        ctx.profile.memory_mib)
                    if ready is None:  # the first Start makes the snapshot point
                        return
                    point = ready
                free = await asyncio.to_thread(os.statvfs, self.paths.data)
                if free.f_bavail * free.f_frsize < SPARE_MIN_FREE:
                    log.info("%s: short of disk space, no spare overlay", self.name)
                    return
                # A suspended session is most likely resumed next: the spare goes on its chain
                # (and no standby: it would sit on the kept one).
                suspended = await asyncio.to_thread(ctx.suspended)
                self._spare = await prepare_overlay(self.paths, ctx, image, point, suspended)
                if suspended is None:
                    await self._launch_standby(ctx)
                if self.passphrase is not None or not key_store(self.paths).is_protected(
                        self.name):
                    await prepare_volume(self.paths, ctx, self.passphrase)
        except (BlankSlateError, OSError) as exc:
            log.warning("%s: could not prepare the next overlay: %s", self.name, exc)
        finally:
            self._spare_task = None

    async def _launch_standby(self, ctx: Context) -> None:
        """Launch QEMU on the spare, paused until a Start gives it its state: when wanted,
        allowed, not waiting for a passphrase, and with memory to spare."""
        if not self.standby_wanted or self._spare is None or self._standby is not None:
            return
        if self.passphrase is None and key_store(self.paths).is_protected(self.name):
            return
        memory = (ctx.profile.memory_mib
                  or ImageStore(self.paths).get(ctx.profile.image).recipe.memory_mib)
        if not standby_allowed(AppSettings.load(self.paths), memory):
            return
        spare, self._spare = self._spare, None
        self._standby = await Session.standby(self.paths, ctx, prepared=spare,
                                              passphrase=self.passphrase)

    async def _take_standby(self, ctx: Context) -> Session | None:
        """The standby session, if it still is what a Start of ``ctx`` would launch."""
        if self._spare_task is not None:
            with contextlib.suppress(asyncio.CancelledError, BlankSlateError):
                await self._spare_task
        standby, self._standby = self._standby, None
        if standby is not None and not standby.matches(ctx):
            self._spawn(standby.discard(), "drop-stale-standby")
            return None
        return standby

    async def _take_spare(self) -> PreparedOverlay | None:
        if self._spare_task is not None:
            with contextlib.suppress(asyncio.CancelledError, BlankSlateError):
                await self._spare_task
        spare, self._spare = self._spare, None
        return spare

    async def _cancel_spare(self) -> None:
        if self._spare_task is not None:
            self._spare_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, BlankSlateError):
                await self._spare_task
            self._spare_task = None
        if self._spare is not None:
            await discard_prepared(self.paths, self._spare)
            self._spare = None
        if self._standby is not None:
            standby, self._standby = self._standby, None
            await standby.discard()


def accel_warning(paths: Paths, image_name: str) -> bool:
    """True when sessions of this image run without KVM (the GUI shows the TCG warning)."""
    try:
        image = ImageStore(paths).get(image_name)
    except BlankSlateError:
        return False
    return ImageStore(paths).accel_for(image) is Accel.TCG

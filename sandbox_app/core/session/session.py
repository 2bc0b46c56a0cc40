"""A session: one throwaway VM restored from a context's snapshot point.

    launching ──▶ standby ──▶ restoring ──▶ running ──▶ keeping ───▶ ended
                                                └──────▶ discarding ─▶ ended

``start`` goes through all of it; ``standby`` stops at a QEMU launched on the session's disk
and network, paused and waiting for its saved state, and ``run`` does the rest (the desktop
app keeps one standby ready, so a Start only loads the state). Every state can be discarded.

Every byte the guest writes lands in a fresh LUKS-encrypted qcow2 overlay whose random key
exists only in this process's memory and in QEMU's (handed over through a pipe). Discard
kills QEMU, overwrites the overlay's allocated blocks with zeros, unlinks it and drops the key.

One idea, one class, over 400 lines: the session's lifecycle above, with the state guard
(``_while``) that every public method passes. Its disk is in ``overlay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..contexts import (
    Context,
    DownloadsTo,
    Journal,
    KeptLayer,
    KeptState,
    Manifest,
    Network,
    SessionRecord,
    Vault,
    async_context_lock,
    collect_garbage,
    compact,
    key_store,
    needs_compaction,
    process_start_time,
)
from ..errors import BlankSlateError, DiskFullError, GuestError, QemuError, UsageError
from ..guest import ExecResult, GuestAgent, screen
from ..guest.text import guest_detail
from ..images import Image, ImageStore, SnapshotPoint
from ..progress import Progress, no_progress
from ..storage import Paths, private_dir, secure_erase
from ..vm import (
    Accel,
    DataInUseError,
    Layer,
    QemuMachine,
    allocated_bytes,
    guestram,
    network,
)
from .address import address_to_url
from .overlay import (
    PreparedOverlay,
    discard_prepared,
    golden_point,
    prepare_overlay,
    read_only_chain,
)
from .volume import ensure_volume, mount_script, unmount_script, volume_tmp_path

log = logging.getLogger(__name__)

MAX_URL = 64 * 1024  # Firefox takes longer, but an argv through the agent has limits
_VM_CHECK_S = 1.0  # how often a long guest command checks that the VM still runs


class SessionState(Enum):
    LAUNCHING = "launching"
    STANDBY = "standby"
    RESTORING = "restoring"
    RUNNING = "running"
    KEEPING = "keeping"
    DISCARDING = "discarding"
    ENDED = "ended"


_P = ParamSpec("_P")
_R = TypeVar("_R")
_Method = Callable[Concatenate["Session", _P], Coroutine[Any, Any, _R]]


def _while(*states: SessionState) -> Callable[[_Method[_P, _R]], _Method[_P, _R]]:
    """The one place a Session method's allowed states are checked: outside ``states`` it
    raises GuestError("the session is not running") before doing anything."""
    def wrap(method: _Method[_P, _R]) -> _Method[_P, _R]:
        @functools.wraps(method)
        async def guarded(self: Session, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            if self.state not in states or self.machine is None:
                raise GuestError("the session is not running")
            return await method(self, *args, **kwargs)
        return guarded
    return wrap


@dataclass
class EndReport:
    """What ending a session did."""

    on_exit: str
    changed_bytes: int
    wiped_bytes: int
    end_s: float
    compact_s: float | None = None  # set when a keep also compacted the context's layers


@dataclass
class Timings:
    launch_s: float | None = None  # QEMU start → waiting for its state (standby)
    restore_s: float | None = None  # state load start → guest running from the snapshot
    agent_s: float | None = None  # state load start → guest agent answering
    network_s: float | None = None  # state load start → this session's lease applied
    extra: dict[str, float] = field(default_factory=dict)


class Session:
    """A running VM for a context. Use ``Session.start``; end with ``discard()``."""

    def __init__(self, paths: Paths, context: Context, image: Image, accel: Accel,
                 point: SnapshotPoint, *, passphrase: str | None = None,
                 resume: bool = False) -> None:
        self.paths = paths
        self._passphrase = passphrase
        self.vault: Vault | None = None
        suspended = context.suspended()
        if resume and suspended is None:
            raise BlankSlateError(f"context '{context.name}' has no suspended session")
        self.resumed = resume  # this session continues the context's suspended one
        self.manifest = suspended if resume and suspended is not None else context.manifest()
        self.warnings: list[str] = []
        self.context = context
        self.image = image
        self.accel = accel
        self.point = point
        self.id = uuid.uuid4().hex[:12]
        self.runtime_dir = paths.runtime / f"s-{self.id}"
        self.state = SessionState.LAUNCHING
        self.timings = Timings()
        self._cold = False
        self._kept_state: KeptState | None = None
        self._ram_file: Path | None = None  # the guest RAM is a private mapping of this
        self.delta_keep = True  # False: keep saves the full RAM (for comparison benchmarks)
        self.machine: QemuMachine | None = None
        self.agent: GuestAgent | None = None
        self._settling: asyncio.Task[None] | None = None
        self.overlay: PreparedOverlay | None = None
        self.network: network.NetworkBackend | None = None
        self.data: Layer | None = None  # the context's persistent volume, attached at restore
        self.journal = Journal(paths)
        self._record = SessionRecord(
            id=self.id,
            context=context.name,
            owner_pid=os.getpid(),
            owner_start=process_start_time(os.getpid()) or 0,
            runtime_dir=str(self.runtime_dir),
        )

    # ---------------------------------------------------------------- start

    @classmethod
    async def start(cls, paths: Paths, context: Context, *, cold: bool = False,
                    prepared: PreparedOverlay | None = None, passphrase: str | None = None,
                    resume: bool = False, progress: Progress = no_progress) -> Session:
        """Restore ``context`` into a fresh VM (or boot it from scratch with ``cold``);
        ``resume``: its suspended session instead (SuspendedError if it has one and
        ``resume`` is not given: resume it, or ``discard_suspended`` first).

        A passphrase-protected context needs ``passphrase`` (AuthError otherwise).
        """
        if not resume and context.suspended_path.exists():
            raise SuspendedError(context.name)  # before any work (``run`` checks it again)
        session = await cls.standby(paths, context, cold=cold, prepared=prepared,
                                    passphrase=passphrase, resume=resume, progress=progress)
        await session.run(progress)
        return session

    @classmethod
    async def standby(cls, paths: Paths, context: Context, *, cold: bool = False,
                      prepared: PreparedOverlay | None = None, passphrase: str | None = None,
                      resume: bool = False, progress: Progress = no_progress) -> Session:
        """The first half of ``start``: QEMU launched on the session's disk and network,
        paused, waiting for its saved state (``-incoming defer``). ``run`` is the rest.
        A session in standby costs QEMU's own memory (the guest RAM is not touched yet) and
        no CPU; it is ended like any session (``discard``)."""
        store = ImageStore(paths)
        image = store.get(context.profile.image)
        accel = store.accel_for(image)
        point = await store.ensure_snapshot(
            image, accel, memory_mib=context.profile.memory_mib, progress=progress
        )
        async with async_context_lock(paths, context.name):  # see contexts.lock
            session = cls(paths, context, image, accel, point, passphrase=passphrase,
                          resume=resume)
            session.journal.write(session._record)
        try:
            await session._launch(cold, prepared, progress)
        except BaseException:
            await asyncio.shield(session._cleanup())
            raise
        session.state = SessionState.STANDBY
        return session

    @_while(SessionState.STANDBY)
    async def run(self, progress: Progress = no_progress) -> None:
        """Load the saved state into the waiting QEMU (or boot it) and let the guest run."""
        if not self.resumed and self.context.suspended_path.exists():
            await asyncio.shield(self._cleanup())
            self.state = SessionState.ENDED
            raise SuspendedError(self.context.name)
        self.state = SessionState.RESTORING
        try:
            await self._restore(progress)
        except BaseException:
            await asyncio.shield(self._cleanup())
            self.state = SessionState.ENDED
            raise
        self.state = SessionState.RUNNING

    def matches(self, context: Context) -> bool:
        """This standby session is still what a start of ``context`` would launch: same
        profile, same kept state (no keep since), its overlay and QEMU still there."""
        machine = self.machine
        return (self.state is SessionState.STANDBY and machine is not None
                and machine.launched and self.overlay is not None
                and self.overlay.path.exists() and context.profile == self.context.profile
                and context.manifest() == self.manifest)

    async def _launch(self, cold: bool, prepared: PreparedOverlay | None,
                      progress: Progress) -> None:
        self.journal.write(self._record)
        private_dir(self.runtime_dir)
        m = self.manifest
        if (m.layers or m.state or self.context.profile.data_mib
                or key_store(self.paths).is_protected(self.context.name)):
            self.vault = await asyncio.to_thread(
                Vault.open, self.paths, self.context, self._passphrase)
            self.warnings += [self.vault.warning] if self.vault.warning else []
        golden = golden_point(self.image, self.point, m)
        self._kept_state = m.state if m.state and golden.identity == self.point.identity else None
        if m.state and not self._kept_state and not cold:
            self.warnings.append("the saved state was made by another QEMU or machine "
                                 "configuration: booting the kept disk instead")
            cold = True
        self._cold = cold
        if prepared is not None and (not prepared.path.exists()
                                     or prepared.backing != self._top_backing()):
            await discard_prepared(self.paths, prepared)
            prepared = None
        if prepared is None:
            progress("preparing an encrypted overlay", None)
            prepared = await prepare_overlay(self.paths, self.context, self.image, self.point,
                                             self.manifest)
        self.overlay = prepared
        self._record.files = [str(prepared.path), str(volume_tmp_path(self.context))]
        self.journal.write(self._record)
        self.journal.remove(prepared.journal_id)  # adopted: our record covers it now
        if self.vault is not None:
            if not self.context.volume_path.exists():
                progress("creating the persistent folder", None)
            self.data = await ensure_volume(self.context, self.vault, self.runtime_dir)

        layers = [*read_only_chain(self.context, self.image, self.point, m, self.vault),
                  Layer(prepared.path, prepared.key.secret_text())]
        kernel, initrd, _ = golden.base_files(self.image.directory)  # a retired point's own
        spec = self.image.machine_spec(self.context.profile.memory_mib, kernel=kernel,
                                       initrd=initrd)
        # The guest RAM is a private mapping of the golden ram.img: as it is for a golden
        # restore, or with a delta keep's pages written over it. Else (a cold boot, a full
        # saved state) plain RAM.
        full_state = self._kept_state is not None and self._kept_state.ram is None
        self._ram_file = None if cold or full_state else golden.ram
        spec = dataclasses.replace(spec, disk=tuple(layers), ram_file=self._ram_file)
        if self.context.profile.network.online:
            self.network = await network.internet(
                self.context.profile.dns, lan=self.context.profile.network is Network.INTERNET_LAN)
            self.warnings += self.network.warnings
        else:
            self.network = network.no_network()
        spec = dataclasses.replace(spec, netdev=self.network.netdev)
        self.machine = QemuMachine(spec, self.runtime_dir, self.accel)
        t0 = time.monotonic()
        try:
            await self.machine.launch(incoming=not cold, extra_fds=self.network.inherit_fds)
        finally:
            for fd in self.network.inherit_fds:  # QEMU has its copy now
                os.close(fd)
            self.network.inherit_fds = []
        self.timings.launch_s = time.monotonic() - t0
        self._record.qemu_pid = self.machine.pid
        self._record.qemu_start = process_start_time(self.machine.pid or 0)
        self.journal.write(self._record)

    async def _restore(self, progress: Progress) -> None:
        machine, cold, kept_state = self._running_machine(), self._cold, self._kept_state
        progress("restoring" if not cold else "booting", None)
        t0 = time.monotonic()
        if cold:
            if self.data is not None:
                try:
                    await machine.attach_data(self.data)
                except DataInUseError as exc:
                    machine.data_error = str(exc)
            await machine.execute("cont")
        elif kept_state is not None:
            assert self.vault is not None
            vault, data = self.vault, self.context.data_dir
            label = functools.partial(kept_state.label, self.context.name,
                                      self.manifest.generation, self.manifest.snapshot)
            if kept_state.ram is not None:
                assert self._ram_file is not None and machine.pid is not None
                pages = vault.load(data / kept_state.ram, label=label(kept_state.ram))
                await asyncio.to_thread(guestram.write_delta, machine.pid, self._ram_file, pages)
            await vault.restore_state(
                lambda fd: machine.restore(fd, template=False, data=self.data),
                data / kept_state.file, label=label(kept_state.file),
                unpack=guestram.unpack_devices if kept_state.ram is not None else None)
            self.timings.restore_s = time.monotonic() - t0
        else:
            self.point.verify()
            with open(self.point.state, "rb") as f:
                await machine.restore(f.fileno(), template=True, data=self.data)
            self.timings.restore_s = time.monotonic() - t0
        if machine.data_error is not None:
            self.data = None
            self.warnings.append("the persistent folder is open in another session of this "
                                 "context: this one runs without it")
        self.agent = await GuestAgent.from_socket(machine.take_agent_socket())
        if cold:
            await self._settle(cold, t0)
        else:
            # The restored guest is on screen now; its agent answers a few hundred ms
            # later. Anything that needs the agent awaits ready().
            self._settling = asyncio.create_task(self._settle(cold, t0),
                                                 name=f"settle-{self.id}")
            # Its failure is reported by ready(); a session ended first never asks.
            self._settling.add_done_callback(
                lambda t: t.cancelled() or t.exception())

    async def _settle(self, cold: bool, t0: float) -> None:
        assert self.agent is not None
        await self.agent.wait_ready(300.0 if cold else 30.0)
        self.timings.agent_s = time.monotonic() - t0
        if not cold:
            # The saved clock is stale; vmgenid (new GUID per QEMU) reseeds the RNG.
            await self.agent.set_time()
        await self._apply_network(t0)
        await self._mount_data()
        if cold:
            # A restore is on screen at once; a booted guest only once its own start-up is
            # done (the browser's page drawn): until then "started" would show a black or
            # half-drawn screen, and a URL opened now would find no browser.
            failure = await self.agent.wait_until(self.image.recipe.ready_command, 300.0)
            if failure is not None:
                self.warnings.append(f"the guest did not finish starting: {failure}")

    async def _mount_data(self) -> None:
        """Mount the persistent folder in the guest. A failure is a warning: the session is
        fine, the folder is not there."""
        if self.data is None:
            return
        assert self.agent is not None
        res = await self.agent.exec(
            ["/bin/sh", "-c", mount_script(self.persistent_dir, self._downloads_bind)],
            timeout=60)
        if res.exit_code != 0:
            detail = guest_detail(res.stdout or res.stderr)
            self.warnings.append(f"the persistent folder is not mounted: {detail}")
            log.warning("session %s: %s", self.id, self.warnings[-1])

    @property
    def persistent_dir(self) -> str:
        """Where the guest has the persistent folder."""
        return self.image.recipe.persistent_dir

    @property
    def _downloads_bind(self) -> str | None:
        """The guest's downloads folder when the context keeps downloads (bound over it
        from ``Persistent/Downloads``), else None."""
        keep = self.context.profile.downloads is DownloadsTo.PERSISTENT
        return self.image.recipe.downloads_dir if keep else None

    async def _apply_network(self, t0: float) -> None:
        """Give the guest a lease for *this* session's network (the one in the snapshot is
        the network of its saving). A failure is a warning: the VM itself is fine."""
        command = self.image.recipe.network_command
        if not self.context.profile.network.online or not command:
            return
        assert self.agent is not None
        res = await self.agent.exec([command], timeout=30)
        if res.exit_code != 0:
            detail = guest_detail(res.stderr or res.stdout)
            self.warnings.append(f"the guest got no network lease: {detail or 'no answer'}")
            log.warning("session %s: %s", self.id, self.warnings[-1])
            return
        self.timings.network_s = time.monotonic() - t0

    @_while(SessionState.RUNNING, SessionState.KEEPING)
    async def ready(self) -> GuestAgent:
        """The guest agent, once it answers, the guest clock is set (after a restore) and the
        session's network lease applied (a failed lease is a warning, not an error)."""
        assert self.agent is not None
        if self._settling is not None:
            try:
                await asyncio.shield(self._settling)
            except GuestError:
                await self._raise_if_vm_failed()
                raise
        return self.agent

    @_while(SessionState.RUNNING)
    async def resync(self) -> None:
        """After the host slept: set the guest clock again and renew its network lease (the
        host may wake on another network)."""
        agent = await self.ready()
        await agent.set_time()
        await self._apply_network(time.monotonic())

    # ---------------------------------------------------------------- use

    async def exec(self, command: str, timeout: float = 120.0) -> ExecResult:
        """Run ``sh -c command`` in the guest. A VM that dies or pauses on a full disk while
        the command runs ends the wait at once, with that error."""
        agent = await self.ready()
        run = asyncio.ensure_future(agent.shell(command, timeout=timeout))
        try:
            while not (await asyncio.wait({run}, timeout=_VM_CHECK_S))[0]:
                await self._raise_if_vm_failed()
            return run.result()
        except GuestError:
            await self._raise_if_vm_failed()
            raise
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError, BlankSlateError):
                    await run

    async def _raise_if_vm_failed(self) -> None:
        """Turn a dead or I/O-error-paused VM into the error the user should see."""
        machine = self.machine
        if machine is None or machine.process is None:
            return
        if machine.process.returncode is not None:
            raise QemuError(f"the VM stopped unexpectedly: {machine.failure_message()}")
        status = None
        with contextlib.suppress(BlankSlateError):
            status = (await machine.execute("query-status"))["status"]
        if status == "io-error":  # raised outside the suppress: DiskFullError is one too
            raise DiskFullError("the disk holding Blank Slate's data is full: "
                                "the session was paused")

    @_while(SessionState.RUNNING)
    async def open_url(self, text: str, *, wait: bool = True, timeout: float = 60.0) -> str:
        """Open what the user typed (an address, or words to search for) in the guest's
        browser; with ``wait``, until the page has drawn. Returns the URL opened."""
        url = address_to_url(text, self.context.profile.search)
        command = self.image.recipe.open_url_command
        if not command:
            raise GuestError(f"the '{self.image.name}' image has no browser to open pages in")
        if not url or len(url) > MAX_URL or any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
            raise UsageError("the URL is empty, too long or holds control characters")
        agent = await self.ready()
        machine = self._running_machine()
        before = await screen.grab(machine, self.runtime_dir) if wait else None
        res = await agent.exec([*command, url], timeout=30.0)
        if res.exit_code != 0:
            raise GuestError("the guest's browser did not take the URL: "
                             + guest_detail(res.stderr))
        if wait:
            await screen.wait_settled(machine, self.runtime_dir, changed_from=before,
                                      loading_color=self.image.recipe.loading_color,
                                      timeout=timeout)
        return url

    def _running_machine(self) -> QemuMachine:
        assert self.machine is not None  # by @_while
        return self.machine

    @_while(SessionState.RUNNING)
    async def grab_screen(self) -> screen.Frame:
        return await screen.grab(self._running_machine(), self.runtime_dir)

    @_while(SessionState.RUNNING)
    async def screenshot(self, dest: Path) -> None:
        """Save what the guest's screen shows now as a PNG."""
        await screen.save_png(self._running_machine(), self.runtime_dir, dest)

    @property
    def vnc_path(self) -> Path:
        return self.runtime_dir / "vnc.sock"

    @property
    def memory_mib(self) -> int:
        """The guest's RAM size."""
        if self.machine is not None:
            return self.machine.spec.memory_mib
        return self.context.profile.memory_mib or 0

    def changed_bytes(self) -> int:
        """Bytes the session has written so far (the overlay's growth on the host)."""
        if self.overlay is None:
            return 0
        return max(0, allocated_bytes(self.overlay.path) - self.overlay.empty_bytes)

    # ---------------------------------------------------------------- end

    async def discard(self) -> EndReport:
        """Kill the VM and securely erase everything the session wrote."""
        t0 = time.monotonic()
        self.state = SessionState.DISCARDING
        if self.machine is not None:
            await self.machine.kill()
        changed = self.changed_bytes()
        wiped = await asyncio.shield(self._cleanup())
        if self.resumed:  # what it was resumed from goes with it
            wiped += await discard_suspended(self.paths, self.context)
        self.state = SessionState.ENDED
        return EndReport("discard", changed, wiped, time.monotonic() - t0)

    def _top_backing(self) -> Path:
        m = self.manifest
        if m.layers:
            return self.context.data_dir / m.layers[-1].file
        return golden_point(self.image, self.point, m).disk

    @_while(SessionState.RUNNING)
    async def keep(self) -> EndReport:
        async with async_context_lock(self.paths, self.context.name):  # see contexts.lock
            return await self._keep()

    @_while(SessionState.RUNNING)
    async def suspend(self) -> EndReport:
        """Save this session (disk, RAM, devices: encrypted, as a keep does) without making
        it the context's kept state: ``suspended.json`` beside ``current.json``. The next
        start of the context resumes it (``resume=True``) or discards it first
        (``discard_suspended``); keeping the resumed session makes it current."""
        async with async_context_lock(self.paths, self.context.name):
            return await self._keep(suspend=True)

    async def _keep(self, *, suspend: bool = False) -> EndReport:
        """Make this session the context's new snapshot point (disk + RAM), atomically.

        The guest is stopped and its state saved, encrypted with the context key: its device
        state, and the RAM pages whose content differs from the golden ``ram.img`` (a delta:
        see ``vm.guestram``) — or, when the RAM is not a mapping of ram.img (cold boot, full
        saved state), the whole migration stream. The overlay becomes the context's newest
        layer, its key wrapped by the context key; then ``current.json`` is switched in one
        rename. Nothing is copied, so the time grows with what the session changed, not with
        the image. On failure the context is unchanged, partial files are erased and the
        guest resumes.
        """
        if self.context.manifest().generation != self.manifest.generation:
            raise BlankSlateError(
                f"context '{self.context.name}' was kept by another session since this one "
                "started: this session can only be discarded")
        t0 = time.monotonic()
        machine, overlay = self._running_machine(), self.overlay
        assert overlay is not None  # a running session has its overlay
        # A suspended session stays on its base generation; a keep makes the next one.
        generation = self.manifest.generation + (0 if suspend else 1)
        if self.vault is None:  # a failure here (say, a passphrase set meanwhile): still running
            self.vault = await asyncio.to_thread(
                Vault.open, self.paths, self.context, self._passphrase)
            self.warnings += [self.vault.warning] if self.vault.warning else []
        vault = self.vault
        if not suspend and self.data is not None:  # see session.volume
            res = await (await self.ready()).exec(
                ["/bin/sh", "-c", unmount_script(self.persistent_dir, self._downloads_bind)],
                timeout=60)
            if res.exit_code != 0:
                raise BlankSlateError(res.stdout.decode(errors="replace").strip()[-200:]
                                      or "the persistent folder could not be unmounted")
        self.state = SessionState.KEEPING
        ram_base = self._ram_file if self.delta_keep else None
        state_file = self.context.data_dir / f"state-{uuid.uuid4().hex}.enc"
        ram_file = self.context.data_dir / f"ram-{uuid.uuid4().hex}.enc" if ram_base else None
        written = [state_file, *([ram_file] if ram_file else [])]
        self._record.files += [str(p) for p in written]
        self.journal.write(self._record)
        snapshot = golden_point(self.image, self.point, self.manifest).directory.name
        kept = KeptState(state_file.name, 0, ram_file.name if ram_file else None, bound=True)
        label = functools.partial(kept.label, self.context.name, generation, snapshot)
        with contextlib.suppress(BlankSlateError, OSError):
            await (await self.ready()).shell("sync", timeout=30)
        try:
            if ram_base is not None and ram_file is not None and machine.pid is not None:
                devices = await machine.save_devices()  # stops the guest
                kept = dataclasses.replace(kept, size=await asyncio.to_thread(
                    vault.save, [guestram.pack_devices(devices)], state_file,
                    label=label(state_file.name)))
                kept = dataclasses.replace(kept, ram_size=await asyncio.to_thread(
                    vault.save, guestram.read_delta(machine.pid, ram_base), ram_file,
                    label=label(ram_file.name)))
            else:
                kept = dataclasses.replace(kept, size=await vault.save_state(
                    lambda fd: machine.save(fd, template=False), state_file,
                    label=label(state_file.name)))
        except BaseException:
            for p in written:
                await asyncio.to_thread(secure_erase, p)
            with contextlib.suppress(BlankSlateError):
                await machine.execute("cont")
                await self._mount_data()  # a keep unmounted it
            self.state = SessionState.RUNNING
            raise
        await machine.shutdown()
        changed = self.changed_bytes()
        old = self.manifest
        new = Manifest(
            image=self.image.name,
            snapshot=snapshot,
            layers=(*old.layers, KeptLayer(
                overlay.path.name, vault.wrap(overlay.path.name, overlay.key.secret_text()))),
            state=kept,
            generation=generation,
            kept_at=time.time() if not suspend else old.kept_at,
        )
        target = self.context.suspended_path if suspend else self.context.manifest_path
        try:
            new.save(target)  # the commit point
        except DiskFullError:
            for p in written:
                await asyncio.to_thread(secure_erase, p)
            raise
        if self.resumed and not suspend:  # the suspended session is the kept one now
            await asyncio.to_thread(secure_erase, self.context.suspended_path)
        self.manifest = new
        overlay.key.drop()
        self.overlay = None  # now a layer of the context: not ours to erase
        wiped = await asyncio.shield(self._cleanup())
        wiped += await asyncio.to_thread(collect_garbage, self.context.data_dir,
                                         self.journal.live_files())
        self.state = SessionState.ENDED
        report = EndReport("suspend" if suspend else "keep", changed, wiped,
                           time.monotonic() - t0)
        if suspend:
            return report
        others = [r for r in self.journal.records()
                  if r.context == self.context.name and r.owner_alive() and r.id != self.id]
        if needs_compaction(self.context) and not others:  # never under a running overlay
            t1 = time.monotonic()
            report.wiped_bytes += await compact(self.context, self.image, vault)
            report.compact_s = time.monotonic() - t1
        return report

    async def _cleanup(self) -> int:
        """Erase the overlay and the runtime dir, drop the key, close the journal entry.

        Returns the number of bytes overwritten.
        """
        wiped = 0
        if self._settling is not None and not self._settling.done():
            self._settling.cancel()
            with contextlib.suppress(asyncio.CancelledError, BlankSlateError, OSError):
                await self._settling
        with contextlib.suppress(BlankSlateError, OSError):
            if self.agent is not None:
                await self.agent.close()
        if self.machine is not None:
            await self.machine.kill()
        if self.network is not None:
            await self.network.close()
        if self.overlay is not None:
            wiped += (await asyncio.to_thread(secure_erase, self.overlay.path)).wiped_bytes
            self.overlay.key.drop()
        if self.runtime_dir.is_dir():
            for p in self.runtime_dir.iterdir():
                if p.is_file() and not p.is_symlink():
                    wiped += (await asyncio.to_thread(secure_erase, p)).wiped_bytes
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
        self.journal.remove(self.id)
        return wiped


class SuspendedError(BlankSlateError):
    """The context has a suspended session: resume it or discard it before a new one."""

    def __init__(self, context: str) -> None:
        super().__init__(f"context '{context}' has a suspended session: resume it "
                         "(--resume) or discard it (--discard-suspended)")
        self.context = context


async def discard_suspended(paths: Paths, context: Context) -> int:
    """Securely erase a context's suspended session (its state and its own layers); the
    kept state is untouched. Returns the bytes overwritten."""
    async with async_context_lock(paths, context.name):
        if not context.suspended_path.exists():
            return 0
        wiped = (await asyncio.to_thread(secure_erase, context.suspended_path)).wiped_bytes
        return wiped + await asyncio.to_thread(collect_garbage, context.data_dir,
                                               Journal(paths).live_files())

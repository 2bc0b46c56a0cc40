"""One QEMU process, owned end to end: launch, QMP, migration, orderly or forced shutdown.

Modelled on QEMU's own ``qemu.machine``: QMP rides a socketpair created before the fork (no
connect race, no listening socket); a launch failure is a ``QemuLaunchError`` carrying the
argv, exit code and QEMU's log tail; commands need a launched machine; migrations wait on
QMP ``MIGRATION`` events, not polling; shutdown is "ask politely, then kill"; QEMU dies with
us (PR_SET_PDEATHSIG). ``async with machine:`` kills it on the way out, whatever happened.

QEMU never runs as root: when the app does, QEMU opens its files and drops to an
unprivileged user (``-runas``) before the guest runs; what it opens later (the data volume,
screendump targets) it gets as descriptors, never as paths. The guest's console reaches
``console.log`` through the app, which stops writing at ``CONSOLE_CAP``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from qemu.qmp import EventListener, QMPClient
from qemu.qmp.error import QMPError

from ..errors import QemuError
from .argv import DATA_NODE, DATA_PLACEHOLDER, Accel, Layer, MachineSpec, build_argv
from .process import child_setup, find_qemu, qemu_user, secret_pipe, short_error

log = logging.getLogger(__name__)

_LAUNCH_TIMEOUT = 20.0
_LOG_TAIL_LINES = 20
CONSOLE_CAP = 1 << 20
"""Most bytes of guest console output kept in ``console.log``; the rest is read and dropped
(a guest must not fill the host's disk, nor stall on a console nobody reads)."""


class DataInUseError(QemuError):
    """The data volume is open in another QEMU (another session of the same context)."""


class QemuLaunchError(QemuError):
    """QEMU did not come up. The message is QEMU's own last error line; the attributes say
    everything else a bug report needs."""

    def __init__(self, message: str, *, argv: Sequence[str], exitcode: int | None,
                 log_tail: str) -> None:
        super().__init__(message)
        self.argv = list(argv)
        self.exitcode = exitcode
        self.log_tail = log_tail


class QemuMachine:
    """One QEMU process: launch, QMP, guest agent socket, orderly or forced shutdown."""

    def __init__(self, spec: MachineSpec, session_dir: Path, accel: Accel) -> None:
        self.spec = spec
        self.session_dir = session_dir
        self.accel = accel
        self.qmp = QMPClient("blankslate")
        self.agent_sock: socket.socket | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.argv: list[str] = []
        self._log_path = session_dir / "qemu.log"
        self.console_path = session_dir / "console.log"
        self._console_task: asyncio.Task[None] | None = None
        self.data_error: str | None = None  # why the data volume is not attached

    async def __aenter__(self) -> QemuMachine:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.kill()

    @property
    def launched(self) -> bool:
        """QEMU is running and QMP is connected."""
        return self.process is not None and self.process.returncode is None and \
            self.qmp.runstate.name == "RUNNING"

    def take_agent_socket(self) -> socket.socket:
        """Hand our end of the guest agent socketpair over (to a GuestAgent, which owns it
        from then on: closing it here under a live asyncio transport would let the fd number
        be reused by the next session's socket)."""
        sock, self.agent_sock = self.agent_sock, None
        if sock is None:
            raise QemuError("the guest agent channel was already taken")
        return sock

    @property
    def vnc_path(self) -> Path:
        return self.session_dir / "vnc.sock"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def launch(self, *, incoming: bool, extra_fds: Sequence[int] = ()) -> None:
        """Start QEMU (paused, or waiting for an incoming migration) and connect QMP.

        ``extra_fds`` are inherited as they are (e.g. the network backend's socket).
        """
        if self.process is not None:
            raise QemuError("this QEMU machine was already launched")
        qemu = find_qemu()
        runas = qemu_user()
        qmp_ours, qmp_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ga_ours, ga_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        con_ours, con_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        secret_fds = [
            secret_pipe(layer.secret) if layer.secret is not None else None
            for layer in self.spec.disk
        ]
        inherited = [qmp_theirs.fileno(), ga_theirs.fileno(), con_theirs.fileno()]
        inherited += [fd for fd in secret_fds if fd is not None]
        inherited += list(extra_fds)
        self.argv = argv = build_argv(
            self.spec,
            accel=self.accel,
            qmp_fd=qmp_theirs.fileno(),
            agent_fd=ga_theirs.fileno(),
            secret_fds=secret_fds,
            session_dir=self.session_dir,
            incoming=incoming,
            console_fd=con_theirs.fileno(),
            qemu=qemu,
            runas=runas.runas if runas else None,
        )
        log.debug("launching %s", " ".join(argv))
        logfd = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=logfd,
                stderr=logfd,
                pass_fds=inherited,
                preexec_fn=child_setup,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                start_new_session=True,
            )
        except OSError as exc:
            con_ours.close()
            raise QemuLaunchError(f"cannot start QEMU: {exc.strerror}", argv=argv, exitcode=None,
                                  log_tail="") from exc
        finally:
            os.close(logfd)
            qmp_theirs.close()
            ga_theirs.close()
            con_theirs.close()
            for fd in secret_fds:
                if fd is not None:
                    os.close(fd)
            # The secrets are in QEMU's pipes now: keep no copy of them here.
            self.spec = dataclasses.replace(
                self.spec, disk=tuple(Layer(layer.path) for layer in self.spec.disk))
        self.agent_sock = ga_ours
        self._console_task = asyncio.create_task(self._pump_console(con_ours),
                                                 name=f"console of {self.session_dir.name}")
        try:
            async with asyncio.timeout(_LAUNCH_TIMEOUT):
                await self.qmp.connect(qmp_ours)
        except (QMPError, OSError, EOFError, TimeoutError) as exc:
            await self.kill()
            raise QemuLaunchError(
                f"QEMU failed to start: {self.failure_message()}", argv=argv,
                exitcode=self.process.returncode if self.process else None,
                log_tail=self.log_tail(),
            ) from exc

    async def _pump_console(self, sock: socket.socket) -> None:
        """Copy the guest's console into ``console.log`` up to ``CONSOLE_CAP`` bytes, then
        keep reading and dropping it (an unread console would stall the guest's writes)."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        kept = 0
        try:
            with sock, open(self.console_path, "wb", buffering=0) as out:
                os.fchmod(out.fileno(), 0o600)
                while data := await loop.sock_recv(sock, 1 << 16):
                    if kept < CONSOLE_CAP:
                        out.write(data[:CONSOLE_CAP - kept])
                        kept += len(data)
                        if kept >= CONSOLE_CAP:
                            out.write(b"\n[console output cut at %d bytes]\n" % CONSOLE_CAP)
        except OSError as exc:
            log.debug("console of %s: %s", self.session_dir.name, exc)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines QEMU wrote to its log."""
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure_message(self) -> str:
        """QEMU's own last error line, for a one-line user message."""
        lines = [short_error(ln) for ln in self.log_tail().splitlines() if ln.strip()]
        errors = [ln for ln in lines if "warning" not in ln.lower()]
        return (errors or lines or ["no output"])[-1]

    async def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        """A QMP command; a QEMU-side error becomes QemuError."""
        if self.process is None:
            raise QemuError(f"QEMU command {cmd}: the machine was never launched")
        try:
            return await self.qmp.execute(cmd, args)
        except QMPError as exc:
            raise QemuError(f"QEMU command {cmd} failed: {exc}") from exc
        except (OSError, EOFError) as exc:
            raise QemuError(f"QEMU command {cmd}: QEMU is gone ({self.failure_message()})") \
                from exc

    async def pass_fd(self, fd: int, name: str) -> None:
        """Hand an open fd to QEMU under ``name`` (SCM_RIGHTS + getfd)."""
        self.qmp.send_fd_scm(fd)
        await self.execute("getfd", {"fdname": name})

    async def set_capabilities(self, **caps: bool) -> None:
        await self.execute(
            "migrate-set-capabilities",
            {"capabilities": [{"capability": k.replace("_", "-"), "state": v}
                              for k, v in caps.items()]},
        )

    async def _migrate(self, cmd: str, args: dict[str, Any], timeout: float) -> str:
        """Start a migration and wait for its ``MIGRATION`` event to reach an end state
        (QEMU emits them with the ``events`` capability on both sides). Returns the status:
        ``completed``, ``failed`` or ``cancelled``. QEMU dying or the timeout raise."""
        assert self.process is not None
        listener = EventListener("MIGRATION")
        with self.qmp.listen(listener):
            await self.execute(cmd, args)
            died = asyncio.ensure_future(self.process.wait())
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        event = asyncio.ensure_future(listener.get())
                        done, _ = await asyncio.wait(
                            {event, died}, return_when=asyncio.FIRST_COMPLETED)
                        if event not in done:
                            event.cancel()
                            raise QemuError(f"QEMU died: {self.failure_message()}")
                        data = event.result()["data"]
                        status = str(data.get("status")) if isinstance(data, dict) else ""
                        if status in ("completed", "failed", "cancelled"):
                            return status
            except TimeoutError:
                raise QemuError("migration timed out") from None
            finally:
                died.cancel()

    async def restore(self, state_fd: int, *, template: bool, timeout: float = 120.0,
                      data: Layer | None = None) -> None:
        """Load a saved device(+RAM) state from ``state_fd`` into a ``-incoming defer`` QEMU
        and let it run (with ``data`` attached first: see ``attach_data``)."""
        await self.set_capabilities(x_ignore_shared=template, events=True)
        await self.pass_fd(state_fd, "incoming")
        status = await self._migrate("migrate-incoming", {"uri": "fd:incoming"}, timeout)
        if status != "completed":
            raise QemuError(f"restoring the saved state failed: {self.failure_message()}")
        if data is not None:
            try:
                await self.attach_data(data)
            except DataInUseError as exc:  # the session runs; without its data volume
                self.data_error = str(exc)
        if not (await self.execute("query-status"))["running"]:
            await self.execute("cont")

    async def attach_data(self, data: Layer) -> None:
        """Put the context's data volume (a LUKS qcow2) under the ``data0`` disk, which
        QEMU started with over an empty placeholder: before the guest runs, so it never
        reads the placeholder. At run time, not launch time, so a QEMU launched ahead (a
        standby) never holds the volume that a running session writes. The guest sees a
        capacity change and reads the new size. The key goes in through a pipe."""
        assert data.secret is not None
        runas = qemu_user()
        reader = secret_pipe(data.secret)
        try:
            if runas is not None:  # QEMU reopens it as /dev/fd/N, as its own user
                os.fchown(reader, runas.uid, runas.gid)
            self.qmp.send_fd_scm(reader)
            added = await self.execute("add-fd")
        finally:
            os.close(reader)
        try:  # a secret object reads a path: QEMU's own number for the fd it was given
            await self.execute("object-add", {"qom-type": "secret", "id": "datasec",
                                              "file": f"/dev/fd/{added['fd']}", "format": "raw"})
        finally:
            await self.execute("remove-fd", {"fdset-id": added["fdset-id"]})
        # The volume goes in as a descriptor (an fdset): QEMU may run as a user that cannot
        # reach the context's directory, and opens no path of ours after its start.
        volume = os.open(data.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.qmp.send_fd_scm(volume)
            volume_set = (await self.execute("add-fd", {"opaque": "data volume"}))["fdset-id"]
        finally:
            os.close(volume)
        try:
            await self.execute("blockdev-add", {
                "driver": "qcow2", "node-name": "datavol",
                "file": {"driver": "file", "filename": f"/dev/fdset/{volume_set}"},
                "encrypt": {"format": "luks", "key-secret": "datasec"}})
        except QemuError as exc:
            await self.execute("object-del", {"id": "datasec"})
            await self.execute("remove-fd", {"fdset-id": volume_set})
            if "lock" in str(exc):  # QEMU's image locking: another QEMU has it open
                raise DataInUseError(str(exc)) from exc
            raise
        await self.execute("blockdev-reopen", {"options": [
            {"driver": "raw", "node-name": DATA_NODE, "file": "datavol"}]})
        await self.execute("blockdev-del", {"node-name": DATA_PLACEHOLDER})
        await self.execute("object-del", {"id": "datasec"})  # the open volume keeps its key
        nodes = await self.execute("query-named-block-nodes", {"flat": True})
        size = next(n["image"]["virtual-size"] for n in nodes if n["node-name"] == DATA_NODE)
        await self.execute("block_resize", {"node-name": DATA_NODE, "size": size})

    async def save(self, state_fd: int, *, template: bool, timeout: float = 600.0) -> None:
        """Stop the guest and write its state to ``state_fd``."""
        await self.execute("stop")
        await self.set_capabilities(x_ignore_shared=template, events=True)
        await self.pass_fd(state_fd, "outgoing")
        status = await self._migrate("migrate", {"uri": "fd:outgoing"}, timeout)
        if status != "completed":
            info = await self.execute("query-migrate")
            raise QemuError(f"saving state failed: {info.get('error-desc', status)}")

    async def into_memfd(self, cmd: str, args: dict[str, Any]) -> bytes:
        """Run a QMP command that writes a file (``filename``), giving it a memfd as
        ``/dev/fdset/N`` (memory, never disk; no path QEMU must be able to reach); return
        what it wrote. Not a pipe: QEMU closes an fdset's descriptors only while the guest
        runs."""
        memfd = os.memfd_create("blankslate-qemu-out", os.MFD_CLOEXEC)
        try:
            writer = os.open(f"/proc/self/fd/{memfd}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                self.qmp.send_fd_scm(writer)
                fdset = (await self.execute("add-fd"))["fdset-id"]
            finally:
                os.close(writer)
            try:
                await self.execute(cmd, {**args, "filename": f"/dev/fdset/{fdset}"})
            finally:
                await self.execute("remove-fd", {"fdset-id": fdset})
            return os.pread(memfd, os.fstat(memfd).st_size, 0)
        finally:
            os.close(memfd)

    async def save_devices(self) -> bytes:
        """Stop the guest and return its device state alone (no RAM: see ``guestram``); the
        stream loads with ``restore``.

        QEMU writes it to a memfd (memory, never disk) it opens as ``/dev/fdset/N``: not a
        pipe, because QEMU closes an fdset's descriptors only while the guest runs.
        """
        await self.execute("stop")
        return await self.into_memfd("xen-save-devices-state", {"live": False})

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Ask QEMU to quit (flushing its disks); kill it if it does not."""
        if self.process is None:
            return
        if self.process.returncode is None:
            with contextlib.suppress(QMPError, OSError, EOFError, TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.qmp.execute("quit")
            try:
                async with asyncio.timeout(timeout):
                    await self.process.wait()
            except TimeoutError:
                log.warning("QEMU did not quit in %.0fs: killing it", timeout)
        await self.kill()

    async def kill(self) -> None:
        """Kill QEMU at once (discard path: nothing is flushed) and reap it."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        with contextlib.suppress(QMPError, OSError, EOFError):
            # After QEMU exits, disconnect() re-raises the reader's EOFError: expected.
            await self.qmp.disconnect()
        if self.agent_sock is not None:
            self.agent_sock.close()
            self.agent_sock = None
        if self._console_task is not None:  # QEMU is gone: the console ends by itself
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await asyncio.shield(self._console_task)
            self._console_task.cancel()
            self._console_task = None

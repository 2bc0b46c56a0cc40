"""Hardened QEMU: build the argv, own the process end to end, talk QMP over a socketpair.

Modelled on QEMU's own ``qemu.machine``: QMP rides a socketpair created before the fork (no
connect race, no listening socket), a launch failure carries QEMU's own message, shutdown is
"ask politely, then kill", and QEMU dies with us (PR_SET_PDEATHSIG).

Nothing here listens on TCP: QMP and the guest agent use inherited socketpairs, VNC a unix
socket inside the session's 0700 directory. Secrets reach QEMU through inherited pipes
(``-object secret,file=/dev/fd/N``), never argv, environment or disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from ..errors import QemuError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LAUNCH_TIMEOUT = 20.0


class Accel(Enum):
    KVM = "kvm"
    TCG = "tcg"

    @property
    def cpu_model(self) -> str:
        return "host" if self is Accel.KVM else "max"


TCG_WARNING = (
    "KVM is not available: running under software emulation (TCG). It is slower, and TCG is "
    "not a security boundary: a hostile guest has a far larger attack surface on the host."
)


def find_qemu(name: str = "qemu-system-x86_64") -> str:
    """Path of a QEMU binary, or a QemuError telling the user what to install."""
    override = os.environ.get("BLANKSLATE_QEMU") if name == "qemu-system-x86_64" else None
    path = override or shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        pkg = "qemu-system-x86" if name.startswith("qemu-system") else "qemu-utils"
        raise QemuError(f"{name} not found: install the Debian package '{pkg}'")
    return path


def qemu_version() -> str:
    """The version string of the QEMU binary we run (part of every snapshot's identity)."""
    out = subprocess.run(
        [find_qemu(), "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    return out.splitlines()[0].strip() if out else "unknown"


# --------------------------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One qcow2 file of a disk chain. ``secret`` is the LUKS passphrase text, if encrypted."""

    path: Path
    secret: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class MachineSpec:
    """What to run. Everything that must match between save and restore is in ``identity``."""

    kernel: Path
    initrd: Path
    append: str
    memory_mib: int
    disk: Sequence[Layer]  # bottom first; the last one is the writable top
    cpus: int = 1
    display: tuple[int, int] = (1024, 768)
    ram_file: Path | None = None  # template restore: RAM lives in this file
    ram_shared: bool = False  # True only while building a template
    netdev: Sequence[str] | None = None  # extra -netdev args; None = NIC without a backend

    def identity(self, accel: Accel, qemu: str) -> str:
        """Hash of everything a saved RAM/device state depends on."""
        shape = {
            "qemu": qemu,
            "accel": accel.value,
            "cpu": accel.cpu_model,
            "cpus": self.cpus,
            "memory": self.memory_mib,
            "display": list(self.display),
            "append": self.append,
            "devices": _DEVICE_MODEL,
        }
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


# The device model is fixed: a saved state only restores into the same devices. A NIC is
# always present (unplugged for the "none" policy) so one golden snapshot serves all.
_DEVICE_MODEL = [
    "virtio-blk-pci,drive=disk0",
    "virtio-serial-pci",
    "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
    "virtconsole,chardev=con",
    "virtio-rng-pci",
    "vmgenid",
    "virtio-gpu-pci,xres={w},yres={h}",
    "virtio-keyboard-pci",
    "virtio-tablet-pci",
    "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56",
]

SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


def build_argv(
    spec: MachineSpec,
    *,
    accel: Accel,
    qmp_fd: int,
    agent_fd: int,
    secret_fds: Sequence[int | None],
    session_dir: Path,
    incoming: bool,
    qemu: str = "qemu-system-x86_64",
) -> list[str]:
    """The complete, hardened argv. Pure function: easy to test and to audit."""
    machine = "q35,vmport=off,smbus=off,sata=off,hpet=off,i8042=off,usb=off"
    machine += f",accel={accel.value}"
    argv = [
        qemu,
        "-nodefaults",
        "-no-user-config",
        "-sandbox", SANDBOX,
        "-name", "blankslate",
        "-cpu", accel.cpu_model,
        "-smp", str(spec.cpus),
        "-m", f"{spec.memory_mib}M",
    ]
    if spec.ram_file is not None:
        share = "on" if spec.ram_shared else "off"
        argv += [
            "-object",
            f"memory-backend-file,id=ram0,size={spec.memory_mib}M,"
            f"mem-path={spec.ram_file},share={share}",
        ]
    else:
        argv += ["-object", f"memory-backend-ram,id=ram0,size={spec.memory_mib}M"]
    machine += ",memory-backend=ram0"
    argv += ["-machine", machine]
    argv += ["-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", spec.append]
    argv += _disk_args(spec.disk, secret_fds)
    argv += [
        "-chardev", f"socket,id=qmp,fd={qmp_fd}",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", f"socket,id=qga,fd={agent_fd}",
        "-chardev", f"file,id=con,path={session_dir / 'console.log'}",
    ]
    # Default backend: a hub with one port, i.e. a NIC that leads nowhere.
    argv += ["-netdev", ",".join(spec.netdev) if spec.netdev else "hubport,id=net0,hubid=0"]
    w, h = spec.display
    for dev in _DEVICE_MODEL:
        argv += ["-device", dev.format(w=w, h=h)]
    argv += ["-display", "none", "-vnc", f"unix:{session_dir / 'vnc.sock'}"]
    if incoming:
        argv += ["-incoming", "defer"]
    else:
        argv += ["-S"]  # start paused: the caller decides when to run
    return argv


def _disk_args(layers: Sequence[Layer], secret_fds: Sequence[int | None]) -> list[str]:
    """-object secret + -blockdev for each layer; every layer but the top is read-only."""
    # JSON syntax: paths may contain commas, and "backing": null is only expressible here.
    args: list[str] = []
    below: str | None = None
    for i, (layer, sfd) in enumerate(zip(layers, secret_fds, strict=True)):
        read_only = i != len(layers) - 1
        node = f"l{i}" if read_only else "disk0"
        opts: dict[str, Any] = {
            "driver": "qcow2", "node-name": node, "read-only": read_only,
            "file": {"driver": "file", "filename": str(layer.path), "read-only": read_only},
            "backing": below,
        }
        if sfd is not None:
            args += ["-object", f"secret,id=sec{i},file=/dev/fd/{sfd},format=raw"]
            opts["encrypt"] = {"format": "luks", "key-secret": f"sec{i}"}
        args += ["-blockdev", json.dumps(opts)]
        below = node
    return args


# --------------------------------------------------------------------------------------------
# The process
# --------------------------------------------------------------------------------------------


def _set_pdeathsig() -> None:
    """In the child: die when the parent dies, so no QEMU outlives a crashed app."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _secret_pipe(secret: bytes) -> int:
    """A pipe already holding ``secret`` and closed for writing; returns the read end."""
    r, w = os.pipe()
    try:
        os.write(w, secret)
    finally:
        os.close(w)
    return r


class QemuMachine:
    """One QEMU process: launch, QMP, guest agent socket, orderly or forced shutdown."""

    def __init__(self, spec: MachineSpec, session_dir: Path, accel: Accel) -> None:
        self.spec = spec
        self.session_dir = session_dir
        self.accel = accel
        self.qmp = QMPClient("blankslate")
        self.agent_sock: socket.socket | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._log_path = session_dir / "qemu.log"

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
        qemu = find_qemu()
        qmp_ours, qmp_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ga_ours, ga_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        secret_fds = [
            _secret_pipe(layer.secret) if layer.secret is not None else None
            for layer in self.spec.disk
        ]
        inherited = [qmp_theirs.fileno(), ga_theirs.fileno()]
        inherited += [fd for fd in secret_fds if fd is not None]
        inherited += list(extra_fds)
        argv = build_argv(
            self.spec,
            accel=self.accel,
            qmp_fd=qmp_theirs.fileno(),
            agent_fd=ga_theirs.fileno(),
            secret_fds=secret_fds,
            session_dir=self.session_dir,
            incoming=incoming,
            qemu=qemu,
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
                preexec_fn=_set_pdeathsig,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
                start_new_session=True,
            )
        except OSError as exc:
            raise QemuError(f"cannot start QEMU: {exc.strerror}") from exc
        finally:
            os.close(logfd)
            qmp_theirs.close()
            ga_theirs.close()
            for fd in secret_fds:
                if fd is not None:
                    os.close(fd)
        self.agent_sock = ga_ours
        try:
            async with asyncio.timeout(_LAUNCH_TIMEOUT):
                await self.qmp.connect(qmp_ours)
        except (QMPError, OSError, EOFError, TimeoutError) as exc:
            await self.kill()
            raise QemuError(f"QEMU failed to start: {self.failure_message()}") from exc

    def failure_message(self) -> str:
        """QEMU's own last error line, for a one-line user message."""
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return "no output"
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "warning" not in ln.lower()]
        return (errors or lines or ["no output"])[-1]

    async def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        """A QMP command; a QEMU-side error becomes QemuError."""
        try:
            return await self.qmp.execute(cmd, args)
        except QMPError as exc:
            raise QemuError(f"QEMU command {cmd} failed: {exc}") from exc

    async def pass_fd(self, fd: int, name: str) -> None:
        """Hand an open fd to QEMU under ``name`` (SCM_RIGHTS + getfd)."""
        self.qmp.send_fd_scm(fd)
        await self.execute("getfd", {"fdname": name})

    async def wait_migration(self, timeout: float, incoming: bool = False) -> None:
        """Poll until the (incoming or outgoing) migration completes."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            if incoming:
                status = (await self.execute("query-status"))["status"]
                if status != "inmigrate":
                    if status in ("paused", "postmigrate", "running", "prelaunch"):
                        return
                    raise QemuError(f"restoring the saved state failed (VM {status})")
            else:
                info = await self.execute("query-migrate")
                status = info.get("status", "none")
                if status == "completed":
                    return
                if status in ("failed", "cancelled"):
                    raise QemuError(f"saving state failed: {info.get('error-desc', status)}")
            if self.process is not None and self.process.returncode is not None:
                raise QemuError(f"QEMU died: {self.failure_message()}")
            if time.monotonic() > deadline:
                raise QemuError("migration timed out")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def set_capabilities(self, **caps: bool) -> None:
        await self.execute(
            "migrate-set-capabilities",
            {"capabilities": [{"capability": k.replace("_", "-"), "state": v}
                              for k, v in caps.items()]},
        )

    async def restore(self, state_fd: int, *, template: bool, timeout: float = 120.0) -> None:
        """Load a saved device(+RAM) state from ``state_fd`` into a ``-incoming defer`` QEMU."""
        await self.set_capabilities(x_ignore_shared=template)
        await self.pass_fd(state_fd, "incoming")
        await self.execute("migrate-incoming", {"uri": "fd:incoming"})
        await self.wait_migration(timeout, incoming=True)
        if not (await self.execute("query-status"))["running"]:
            await self.execute("cont")

    async def save(self, state_fd: int, *, template: bool, timeout: float = 600.0) -> None:
        """Stop the guest and write its state to ``state_fd``."""
        await self.execute("stop")
        await self.set_capabilities(x_ignore_shared=template)
        await self.pass_fd(state_fd, "outgoing")
        await self.execute("migrate", {"uri": "fd:outgoing"})
        await self.wait_migration(timeout)

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


# --------------------------------------------------------------------------------------------
# KVM probe
# --------------------------------------------------------------------------------------------


def probe_kvm(kernel: Path, cache: Path | None = None, timeout: float = 15.0) -> Accel:
    """Decide KVM or TCG by booting ``kernel`` for real under KVM.

    Opening /dev/kvm is not enough: under broken nested virtualisation KVM runs the first
    instructions and then hangs the guest kernel. So the probe boots the real kernel with no
    root disk and waits for it to reach "VFS: Unable to mount root" (i.e. a fully working
    kernel: paging, interrupts, timers). Result cached per host kernel and QEMU version.
    ``BLANKSLATE_ACCEL=tcg|kvm`` overrides.
    """
    forced = os.environ.get("BLANKSLATE_ACCEL")
    if forced in ("tcg", "kvm"):
        return Accel(forced)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Accel.TCG
    key = f"{os.uname().release}|{qemu_version()}|{kernel.stat().st_size}"
    if cache is not None and cache.exists():
        with contextlib.suppress(ValueError, KeyError, OSError):
            saved = json.loads(cache.read_text())
            if saved["key"] == key:
                return Accel(saved["accel"])
    accel = Accel.KVM if _kvm_boots(kernel, timeout) else Accel.TCG
    if cache is not None:
        with contextlib.suppress(OSError):
            cache.write_text(json.dumps({"key": key, "accel": accel.value}))
    return accel


def _kvm_boots(kernel: Path, timeout: float) -> bool:
    with tempfile.TemporaryDirectory(prefix="blankslate-kvm-") as tmp:
        console = Path(tmp) / "console"
        argv = [
            find_qemu(), "-nodefaults", "-no-user-config", "-machine", "q35,accel=kvm",
            "-cpu", "host", "-m", "256", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 loglevel=3", "-serial", f"file:{console}",
            "-no-reboot", "-display", "none", "-sandbox", SANDBOX,
        ]
        try:
            subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return False
        text = console.read_text(errors="replace") if console.exists() else ""
        return "Unable to mount root" in text or "Kernel panic" in text

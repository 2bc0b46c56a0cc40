"""The hardened QEMU command line, as a pure function of a ``MachineSpec``.

Nothing here listens on TCP: QMP and the guest agent use inherited socketpairs, VNC a unix
socket inside the session's 0700 directory. Secrets reach QEMU through inherited pipes
(``-object secret,file=/dev/fd/N``), never argv, environment or disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


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
            "globals": _GLOBALS,
        }
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


# The device model is fixed: a saved state only restores into the same devices. A NIC is
# always present (unplugged for the "none" policy) so one golden snapshot serves all.
_DEVICE_MODEL = [
    "virtio-blk-pci,drive=disk0",
    # The context's persistent data volume (``DATA_NODE``): empty until a session attaches
    # the volume (``QemuMachine.attach_data``); the guest finds it by its serial. Write-
    # through: a session may be killed at any moment, and what reached it must be on disk.
    "virtio-blk-pci,drive=data0,serial=blankslate-data,write-cache=off",
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

# Saved states carry no configuration section: the device state a keep saves on its own
# (``xen-save-devices-state``, RAM apart) has none, and a load must not expect one. The
# machine's identity guards what that section would check.
_GLOBALS = ["migration.send-configuration=off"]

DATA_NODE, DATA_PLACEHOLDER = "data0", "data0-empty"
DATA_SERIAL = "blankslate-data"

SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
# With -runas QEMU calls setuid itself, after the sandbox is in place (QEMU 7.2 installs it
# first): "deny" would kill it there. Once it has dropped root there is nothing left to
# elevate to (no saved root id, no capabilities, and spawn=deny forbids exec of a setuid
# binary), so allowing the set*id calls costs nothing.
SANDBOX_RUNAS = SANDBOX.replace("elevateprivileges=deny", "elevateprivileges=allow")


def build_argv(
    spec: MachineSpec,
    *,
    accel: Accel,
    qmp_fd: int,
    agent_fd: int,
    secret_fds: Sequence[int | None],
    session_dir: Path,
    incoming: bool,
    console_fd: int,
    qemu: str = "qemu-system-x86_64",
    runas: str | None = None,
) -> list[str]:
    """The complete, hardened argv. Pure function: easy to test and to audit.

    ``console_fd``: a socket the guest's console goes to (the app reads it, with a cap).
    ``runas`` (``UID:GID``): QEMU opens its files, then drops to that user before the
    guest runs (the app runs as root; see ``process.qemu_user``).
    """
    machine = "q35,vmport=off,smbus=off,sata=off,hpet=off,i8042=off,usb=off"
    # A core dump of QEMU must not hold guest RAM (RLIMIT_CORE 0 stops it too).
    machine += f",accel={accel.value},dump-guest-core=off"
    argv = [
        qemu,
        "-nodefaults",
        "-no-user-config",
        "-sandbox", SANDBOX if runas is None else SANDBOX_RUNAS,
    ]
    if runas is not None:
        argv += ["-runas", runas]
    argv += [
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
    for prop in _GLOBALS:
        argv += ["-global", prop]
    argv += ["-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", spec.append]
    argv += _disk_args(spec.disk, secret_fds)
    argv += ["-blockdev", json.dumps({"driver": "null-co", "node-name": DATA_PLACEHOLDER,
                                      "size": 0, "read-zeroes": True}),
             "-blockdev", json.dumps({"driver": "raw", "node-name": DATA_NODE,
                                      "file": DATA_PLACEHOLDER})]
    argv += [
        "-chardev", f"socket,id=qmp,fd={qmp_fd}",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", f"socket,id=qga,fd={agent_fd}",
        "-chardev", f"socket,id=con,fd={console_fd}",
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

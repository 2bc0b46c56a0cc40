"""One QEMU process: the hardened argv, its lifecycle over QMP, qcow2/LUKS disks, passt.

Built on ``storage``; knows nothing of what runs inside the guest.
"""

from .disks import allocated_bytes, check_chain, commit_top, create_overlay, virtual_size
from .machine import (
    TCG_WARNING,
    Accel,
    Layer,
    MachineSpec,
    QemuMachine,
    build_argv,
    probe_kvm,
    qemu_version,
)

__all__ = [
    "TCG_WARNING",
    "Accel",
    "Layer",
    "MachineSpec",
    "QemuMachine",
    "allocated_bytes",
    "build_argv",
    "check_chain",
    "commit_top",
    "create_overlay",
    "probe_kvm",
    "qemu_version",
    "virtual_size",
]

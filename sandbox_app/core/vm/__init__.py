"""One QEMU process: the hardened argv, its lifecycle over QMP, qcow2/LUKS disks, passt.

Built on ``storage``; knows nothing of what runs inside the guest.
"""

from . import guestram
from .accel import probe_kvm
from .argv import TCG_WARNING, Accel, Layer, MachineSpec, build_argv
from .disks import (
    allocated_bytes,
    check_chain,
    commit_top,
    create_overlay,
    create_volume,
    virtual_size,
)
from .machine import DataInUseError, QemuLaunchError, QemuMachine
from .process import find_qemu, qemu_version

__all__ = [
    "TCG_WARNING",
    "Accel",
    "DataInUseError",
    "Layer",
    "MachineSpec",
    "QemuLaunchError",
    "QemuMachine",
    "allocated_bytes",
    "build_argv",
    "check_chain",
    "commit_top",
    "create_overlay",
    "create_volume",
    "find_qemu",
    "guestram",
    "probe_kvm",
    "qemu_version",
    "virtual_size",
]

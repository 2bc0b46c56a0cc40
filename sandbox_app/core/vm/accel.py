"""Decide KVM or TCG by booting the image's kernel for real under KVM."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

from .argv import SANDBOX, Accel
from .process import find_qemu, qemu_version


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

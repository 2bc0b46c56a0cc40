"""The QEMU command line is hardened: audited here without starting anything."""

from __future__ import annotations

from pathlib import Path

from sandbox_app.core.vm import Accel, Layer, MachineSpec, build_argv

SECRET = b"c2VjcmV0LWtleS1ieXRlcw=="


def _argv(tmp_path: Path) -> list[str]:
    spec = MachineSpec(
        kernel=tmp_path / "k", initrd=tmp_path / "i", append="quiet", memory_mib=256,
        disk=(Layer(tmp_path / "base.qcow2"), Layer(tmp_path / "top.qcow2", SECRET)),
        ram_file=tmp_path / "ram.img",
    )
    return build_argv(spec, accel=Accel.TCG, qmp_fd=3, agent_fd=4, secret_fds=[None, 5],
                      session_dir=tmp_path, incoming=True)


def test_no_defaults_and_sandbox(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    assert "-nodefaults" in argv and "-no-user-config" in argv
    sandbox = argv[argv.index("-sandbox") + 1]
    for opt in ("on", "obsolete=deny", "elevateprivileges=deny", "spawn=deny",
                "resourcecontrol=deny"):
        assert opt in sandbox.split(",")


def test_legacy_devices_off(tmp_path: Path) -> None:
    machine = _argv(tmp_path)[_argv(tmp_path).index("-machine") + 1]
    for opt in ("vmport=off", "smbus=off", "sata=off", "hpet=off", "i8042=off", "usb=off"):
        assert opt in machine


def test_only_virtio_devices_plus_vmgenid(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    devices = [argv[i + 1].split(",")[0] for i, a in enumerate(argv) if a == "-device"]
    assert all(d.startswith("virt") or d == "vmgenid" for d in devices), devices
    assert "vmgenid" in devices


def test_no_tcp_anywhere(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    for arg in argv:
        assert not arg.startswith("tcp:") and ",host=" not in arg and ",port=" not in arg
        assert "netdev user" not in arg and not arg.startswith("user,")
    assert argv[argv.index("-vnc") + 1].startswith("unix:")
    assert "-qmp" not in argv  # QMP rides an inherited socketpair


def test_secret_is_passed_by_fd_not_value(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    joined = " ".join(argv)
    assert SECRET.decode() not in joined
    assert "secret,id=sec1,file=/dev/fd/5" in joined
    assert '"key-secret": "sec1"' in joined


def test_lower_layers_are_read_only(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    blockdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-blockdev"]
    base = next(b for b in blockdevs if "base.qcow2" in b)
    top = next(b for b in blockdevs if "top.qcow2" in b)
    assert '"read-only": true' in base and '"read-only": false' in top


def test_template_ram_is_mapped_private(tmp_path: Path) -> None:
    joined = " ".join(_argv(tmp_path))
    assert f"mem-path={tmp_path / 'ram.img'},share=off" in joined

"""The QEMU command line is hardened: audited here without starting anything."""

from __future__ import annotations

from pathlib import Path

from sandbox_app.core.vm import Accel, Layer, MachineSpec, build_argv

SECRET = b"c2VjcmV0LWtleS1ieXRlcw=="


def _argv(tmp_path: Path, runas: str | None = None) -> list[str]:
    spec = MachineSpec(
        kernel=tmp_path / "k", initrd=tmp_path / "i", append="quiet", memory_mib=256,
        disk=(Layer(tmp_path / "base.qcow2"), Layer(tmp_path / "top.qcow2", SECRET)),
        ram_file=tmp_path / "ram.img",
    )
    return build_argv(spec, accel=Accel.TCG, qmp_fd=3, agent_fd=4, secret_fds=[None, 5],
                      session_dir=tmp_path, incoming=True, console_fd=6, runas=runas)


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


def test_guest_ram_is_left_out_of_core_dumps(tmp_path: Path) -> None:
    machine = _argv(tmp_path)[_argv(tmp_path).index("-machine") + 1]
    assert "dump-guest-core=off" in machine.split(",")


def test_the_console_goes_to_the_app_not_to_a_file(tmp_path: Path) -> None:
    argv = _argv(tmp_path)
    chardevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-chardev"]
    assert "socket,id=con,fd=6" in chardevs
    assert not any(c.startswith("file") for c in chardevs)


def test_runas_only_when_asked_and_then_set_id_calls_are_allowed(tmp_path: Path) -> None:
    plain = _argv(tmp_path)
    assert "-runas" not in plain
    assert "elevateprivileges=deny" in plain[plain.index("-sandbox") + 1]
    argv = _argv(tmp_path, runas="1001:1001")
    assert argv[argv.index("-runas") + 1] == "1001:1001"
    sandbox = argv[argv.index("-sandbox") + 1].split(",")
    # QEMU 7.2 installs seccomp before it drops root: "deny" would kill it at its setuid.
    assert "elevateprivileges=allow" in sandbox and "spawn=deny" in sandbox

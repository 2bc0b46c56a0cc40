"""QEMU runs with the least it needs: never as root, no core dumps, a capped console."""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox_app.core.contexts import ContextStore
from sandbox_app.core.errors import UsageError
from sandbox_app.core.session import Session
from sandbox_app.core.storage import Paths
from sandbox_app.core.vm.machine import CONSOLE_CAP
from sandbox_app.core.vm.process import RunAs, qemu_user


def test_qemu_runs_as_ourselves_when_we_are_not_root() -> None:
    assert qemu_user(euid=1000) is None


def test_under_root_the_qemu_user_is_the_one_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setenv("BLANKSLATE_QEMU_USER", "nobody")
    assert qemu_user(euid=0) == RunAs(nobody.pw_uid, nobody.pw_gid)
    monkeypatch.setenv("BLANKSLATE_QEMU_USER", "root")
    with pytest.raises(UsageError, match="must not be root"):
        qemu_user(euid=0)
    monkeypatch.setenv("BLANKSLATE_QEMU_USER", "no-such-user-here")
    with pytest.raises(UsageError, match="no user"):
        qemu_user(euid=0)


def test_under_root_the_qemu_user_owns_the_data_or_is_nobody(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BLANKSLATE_QEMU_USER", raising=False)
    home.mkdir(exist_ok=True)  # the fixture may have made it (its config)
    owner = home.stat()
    if owner.st_uid != 0:
        assert qemu_user(euid=0) == RunAs(owner.st_uid, pwd.getpwuid(owner.st_uid).pw_gid)
    monkeypatch.setenv("BLANKSLATE_HOME", "/")  # root's: QEMU gets nobody
    nobody = pwd.getpwnam("nobody")
    assert qemu_user(euid=0) == RunAs(nobody.pw_uid, nobody.pw_gid)


def test_the_app_process_is_not_dumpable() -> None:
    code = ("import ctypes, resource\n"
            "from sandbox_app.core.vm.process import forbid_core_dumps\n"
            "libc = ctypes.CDLL(None)\n"
            "before = libc.prctl(3, 0, 0, 0, 0)\n"  # PR_GET_DUMPABLE
            "forbid_core_dumps()\n"
            "print(before, libc.prctl(3, 0, 0, 0, 0), resource.getrlimit(resource.RLIMIT_CORE))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip().split(maxsplit=2)
    assert out == ["1", "0", "(0, 0)"]


def test_the_cli_makes_itself_not_dumpable(home: Path) -> None:
    """``blankslate`` (the GUI starts through it too) is non-dumpable: the app holds keys."""
    code = ("import ctypes\n"
            "from sandbox_app import cli\n"
            "cli.main(['context', 'list'])\n"
            "print('dumpable', ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.splitlines()[-1] == "dumpable 0"


def _status_ids(pid: int) -> tuple[int, int]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(int(ln.split()[2]) for ln in lines if ln.startswith("Uid:"))  # effective
    gid = next(int(ln.split()[2]) for ln in lines if ln.startswith("Gid:"))
    return uid, gid


def test_qemu_dumps_no_core_and_a_flooded_console_is_capped(tiny_context: str,
                                                           tiny_paths: Paths) -> None:
    """QEMU's RLIMIT_CORE is 0; a guest writing 8 MiB to its console neither fills the
    host disk (console.log stops at the cap) nor stalls (the app drains the rest)."""
    async def scenario() -> None:
        session = await Session.start(tiny_paths, ContextStore(tiny_paths).get(tiny_context))
        try:
            assert session.machine is not None and session.machine.pid
            limits = Path(f"/proc/{session.machine.pid}/limits").read_text()
            core = next(ln for ln in limits.splitlines() if ln.startswith("Max core file size"))
            assert core.split()[4:6] == ["0", "0"], core
            res = await session.exec("head -c 8388608 /dev/zero | tr '\\0' x > /dev/hvc0; "
                                     "echo done")
            assert res.stdout.strip() == b"done"
            log = session.machine.console_path
            await asyncio.sleep(0.5)
            assert CONSOLE_CAP <= log.stat().st_size < CONSOLE_CAP + 4096
            assert log.stat().st_mode & 0o777 == 0o600
        finally:
            await session.discard()

    asyncio.run(scenario())


@pytest.mark.root
def test_under_root_qemu_runs_as_the_qemu_user(tiny_context: str, tiny_paths: Paths,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The app as root: QEMU drops to BLANKSLATE_QEMU_USER before the guest runs, still
    reads its disks, gets the data volume (a path it could not open) and screenshots."""
    user = os.environ.get("BLANKSLATE_TEST_USER") or "nobody"
    pw = pwd.getpwnam(user)
    monkeypatch.setenv("BLANKSLATE_QEMU_USER", user)

    async def scenario() -> None:
        session = await Session.start(tiny_paths, ContextStore(tiny_paths).get(tiny_context))
        try:
            assert session.machine is not None and session.machine.pid
            assert _status_ids(session.machine.pid) == (pw.pw_uid, pw.pw_gid)
            assert session.machine.data_error is None
            res = await session.exec("echo kept > /root/Persistent/x && cat /root/Persistent/x")
            assert res.stdout.strip() == b"kept", res
            await session.screenshot(tiny_paths.data.parent / "shot.png")
            assert (tiny_paths.data.parent / "shot.png").stat().st_size > 0
        finally:
            await session.discard()

    asyncio.run(scenario())

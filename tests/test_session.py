"""Sessions against real QEMU (TCG) and the tiny guest."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import REPO, private_tiny, run_cli

from sandbox_app.core.contexts import ContextStore
from sandbox_app.core.session import Session
from sandbox_app.core.storage import Paths


def _run_json(context: str, *cmds: str, extra: tuple[str, ...] = ()) -> dict[str, object]:
    args = ["run", context, "--headless", "--json", *extra]
    for c in cmds:
        args += ["--exec", c]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out: dict[str, object] = json.loads(proc.stdout)
    return out


def _stdout(report: dict[str, object], i: int = 0) -> str:
    return report["exec"][i]["stdout"]  # type: ignore[index,no-any-return]


def test_run_restores_from_snapshot_and_runs_commands(tiny_context: str) -> None:
    r = _run_json(tiny_context, "echo hello; exit 3", "uname -s")
    assert r["context"] == tiny_context
    assert isinstance(r["restore_s"], float) and r["restore_s"] < 10
    assert r["exec"][0]["exit_code"] == 3 and _stdout(r) == "hello\n"  # type: ignore[index]
    assert _stdout(r, 1) == "Linux\n"
    assert r["on_exit"] == "discard"


def test_two_sessions_read_different_random_bytes(tiny_context: str) -> None:
    cmd = "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'"
    a = _stdout(_run_json(tiny_context, cmd))
    b = _stdout(_run_json(tiny_context, cmd))
    assert len(a) == 64 and len(b) == 64
    assert a != b


def test_guest_clock_is_right_after_restore(tiny_context: str) -> None:
    r = _run_json(tiny_context, "date +%s")
    assert abs(int(_stdout(r)) - time.time()) < 10


def test_session_writes_stay_in_the_throwaway_overlay(tiny_context: str,
                                                       tiny_paths: Paths) -> None:
    r = _run_json(tiny_context, "head -c 8000000 /dev/urandom > /root/blob; sync; echo ok")
    assert _stdout(r) == "ok\n"
    assert int(r["changed_bytes"]) >= 8_000_000  # type: ignore[call-overload]
    assert int(r["wiped_bytes"]) >= 8_000_000  # type: ignore[call-overload]
    # The next session starts clean from the snapshot point.
    r2 = _run_json(tiny_context, "test -e /root/blob && echo present || echo absent")
    assert _stdout(r2) == "absent\n"


def test_no_overlay_runtime_dir_or_journal_left_after_session(tiny_context: str,
                                                              tiny_paths: Paths) -> None:
    _run_json(tiny_context, "true")
    ctx_dir = tiny_paths.contexts_data / tiny_context
    assert list(ctx_dir.glob("session-*")) == []
    assert list(tiny_paths.runtime.iterdir()) == []
    assert list((tiny_paths.state / "sessions").glob("*.json")) == []


def test_cold_boot_for_comparison(tiny_context: str) -> None:
    r = _run_json(tiny_context, "echo up", extra=("--cold",))
    assert r["restore_s"] is None
    assert isinstance(r["agent_s"], float) and r["agent_s"] > 0
    assert _stdout(r) == "up\n"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            next(f)
            inodes |= {line.split()[9] for line in f}
    return inodes


def test_qemu_has_no_tcp_socket_and_no_key_in_argv_or_env(tiny_context: str,
                                                          tiny_paths: Paths) -> None:
    async def scenario() -> None:
        ctx = ContextStore(tiny_paths).get(tiny_context)
        session = await Session.start(tiny_paths, ctx)
        try:
            assert session.machine is not None and session.overlay is not None
            pid = session.machine.pid
            assert pid
            secret = session.overlay.key.secret_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert secret not in cmdline and secret not in environ
            assert b"tcp:" not in cmdline
            assert not (_socket_inodes(pid) & _tcp_inodes())
            # The runtime dir holding the VNC socket is private.
            assert session.runtime_dir.stat().st_mode & 0o777 == 0o700
            assert session.vnc_path.exists()
            # The key is nowhere in the files we wrote.
            for p in tiny_paths.data.parent.rglob("*"):
                if p.is_file() and not p.is_symlink() and p.stat().st_size < 50_000_000:
                    assert secret not in p.read_bytes(), p
        finally:
            await session.discard()

    asyncio.run(scenario())


def test_kill_9_of_the_app_leaves_nothing_behind(tiny_context: str, tiny_paths: Paths) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox_app", "run", tiny_context, "--headless",
         "--exec", "echo started > /dev/null; sleep 120"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    journal = tiny_paths.state / "sessions"
    deadline = time.monotonic() + 60
    qemu_pid = None
    while time.monotonic() < deadline and qemu_pid is None:
        for rec in journal.glob("*.json") if journal.exists() else []:
            qemu_pid = json.loads(rec.read_text()).get("qemu_pid")
        time.sleep(0.1)
    assert qemu_pid, "session never started"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # PR_SET_PDEATHSIG: QEMU dies with its parent.
    deadline = time.monotonic() + 10
    while Path(f"/proc/{qemu_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{qemu_pid}").exists() or \
        "zombie" in Path(f"/proc/{qemu_pid}/status").read_text()
    ctx_dir = tiny_paths.contexts_data / tiny_context
    assert list(ctx_dir.glob("session-*.qcow2")), "the crash should have left an overlay"
    # Any next command recovers.
    assert run_cli("context", "list").returncode == 0
    assert list(ctx_dir.glob("session-*")) == []
    assert list(tiny_paths.runtime.iterdir()) == []
    assert list(journal.glob("*.json")) == []


def test_missing_qemu_is_a_clean_error(tiny_context: str) -> None:
    proc = run_cli("run", tiny_context, "--headless", env={"BLANKSLATE_QEMU": "/nonexistent"})
    assert proc.returncode == 4
    assert "Traceback" not in proc.stderr
    assert "qemu-system-x86_64 not found" in proc.stderr


def test_corrupt_snapshot_point_is_rebuilt_not_restored(tiny_paths: Paths,
                                                        tiny_context: str) -> None:
    # Work on a private copy of the image store so other tests keep the shared one.
    private_tiny(tiny_paths)
    state = next(tiny_paths.images.glob("tiny/snapshots/*/state.bin"))
    state.chmod(0o644)
    with open(state, "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 64)
    r = _run_json(tiny_context, "echo alive")
    assert _stdout(r) == "alive\n"
    assert r["restore_s"] is not None

"""Suspend and resume (real QEMU under TCG, the tiny guest, through the CLI as a user would).

A suspended session is saved like a keep (encrypted device state, changed RAM pages, its
overlay as a layer) into ``suspended.json``, beside the context's kept state, which it does
not change. The next start resumes it or erases it first; a plain start is refused.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from helpers import REPO, exec_stdout, run_cli, run_session

from sandbox_app.core.contexts import ContextStore
from sandbox_app.core.session import Session, SleepWatch
from sandbox_app.core.storage import Paths

# A process that keeps counting in RAM (tmpfs), and a file on the disk.
COUNTER = ("mkdir -p /run/c && (grep -q ' /run/c ' /proc/mounts || mount -t tmpfs c /run/c) && "
           "(sh -c 'echo $$ > /run/c/pid; i=0; while :; do i=$((i+1)); echo $i > /run/c/n; "
           "sleep 0.2; done' >/dev/null 2>&1 </dev/null &); "
           "echo on-disk > /root/marker; sync; sleep 1; cat /run/c/pid")
FILL = ("mkdir -p /run/b && mount -t tmpfs b /run/b && "
        "dd if=/dev/urandom of=/run/b/x bs=1M count=64 2>/dev/null")
CHECK = "cat /root/marker; cat /run/c/n; kill -0 $(cat /run/c/pid) && echo alive"


_run, _out = run_session, exec_stdout


def _files(paths: Paths, context: str) -> set[str]:
    """The context's session state files (its persistent folder aside)."""
    return {p.name for p in (paths.contexts_data / context).iterdir()} - {
        "persistent.qcow2", "persistent.key"}


def test_suspend_then_resume_is_exactly_where_it_was(tiny_context: str,
                                                     tiny_paths: Paths) -> None:
    kept_before = (tiny_paths.contexts_data / tiny_context / "current.json").read_bytes() \
        if (tiny_paths.contexts_data / tiny_context / "current.json").exists() else None
    _run(tiny_context, COUNTER, on_exit="suspend")
    assert (tiny_paths.contexts_data / tiny_context / "suspended.json").exists()
    after = (tiny_paths.contexts_data / tiny_context / "current.json")
    assert (after.read_bytes() if after.exists() else None) == kept_before, \
        "a suspend does not touch the kept state"
    # A plain start is refused with one line; the context list says it is suspended.
    refused = run_cli("run", tiny_context, "--headless", "--exec", "true")
    assert refused.returncode != 0 and "suspended session" in refused.stderr
    assert refused.stderr.startswith("blankslate: error:") and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, "refused before any work"
    listed = json.loads(run_cli("context", "list", "--json").stdout)
    assert next(r for r in listed if r["name"] == tiny_context)["suspended_at"]
    # Resumed: the file, and the counting process still alive and counting on from there.
    r = _run(tiny_context, CHECK, "sleep 1; cat /run/c/n", on_exit="suspend",
             extra=("--resume",))
    marker, n1, alive = _out(r).split()
    assert marker == "on-disk" and alive == "alive" and int(n1) >= 5
    assert int(_out(r, 1)) > int(n1)
    # Suspended again, resumed again, then kept: it becomes the context's kept state.
    _run(tiny_context, "echo second > /root/second; sync", on_exit="keep", extra=("--resume",))
    assert not (tiny_paths.contexts_data / tiny_context / "suspended.json").exists()
    r = _run(tiny_context, "cat /root/marker /root/second")
    assert _out(r) == "on-disk\nsecond\n"


def test_suspend_then_discard_leaves_nothing(tiny_context: str, tiny_paths: Paths) -> None:
    before = _files(tiny_paths, tiny_context) if (
        tiny_paths.contexts_data / tiny_context).exists() else set()
    _run(tiny_context, "echo secret-marker-7f3a > /root/s; sync", on_exit="suspend")
    assert "suspended.json" in _files(tiny_paths, tiny_context)
    r = _run(tiny_context, "test -e /root/s && echo there || echo gone",
             extra=("--discard-suspended",))
    assert _out(r) == "gone\n"
    assert _files(tiny_paths, tiny_context) == before
    # Nothing of it in plaintext in any context's data or the runtime dir either.
    for p in [*tiny_paths.contexts_data.rglob("*"), *tiny_paths.runtime.rglob("*")]:
        if p.is_file() and not p.is_symlink() and p.stat().st_size < 1 << 30:
            assert b"secret-marker-7f3a" not in p.read_bytes(), p


def test_discarding_a_resumed_session_discards_the_suspended_one(
        tiny_context: str, tiny_paths: Paths) -> None:
    _run(tiny_context, "echo x > /root/x; sync", on_exit="suspend")
    r = _run(tiny_context, "cat /root/x", on_exit="discard", extra=("--resume",))
    assert _out(r) == "x\n"
    assert "suspended.json" not in _files(tiny_paths, tiny_context)
    assert _out(_run(tiny_context, "test -e /root/x && echo there || echo gone")) == "gone\n"


# ------------------------------------------------------------------ host sleep, kill -9


def test_sleep_watch_sees_the_time_the_host_was_suspended() -> None:
    clocks = {"boot": 100.0, "mono": 50.0}
    watch = SleepWatch(2.0, boottime=lambda: clocks["boot"], monotonic=lambda: clocks["mono"])
    clocks["boot"] += 5
    clocks["mono"] += 5  # awake: both clocks run
    assert watch.check() == 0.0
    clocks["boot"] += 601  # asleep for ten minutes (only the boot clock ran), then 1 s
    clocks["mono"] += 1
    assert watch.check() == 600.0
    assert watch.check() == 0.0
    assert SleepWatch().check() == 0.0  # the real clocks, awake


def test_resync_sets_the_guest_clock_again(tiny_context: str, tiny_paths: Paths) -> None:
    async def scenario() -> tuple[int, int]:
        s = await Session.start(tiny_paths, ContextStore(tiny_paths).get(tiny_context))
        try:
            await s.exec("date -s '2001-01-01 00:00:00' >/dev/null")  # as after a long sleep
            before = int((await s.exec("date +%s")).stdout)
            await s.resync()
            return before, int((await s.exec("date +%s")).stdout)
        finally:
            await s.discard()

    before, after = asyncio.run(scenario())
    assert before < 1_000_000_000 < time.time() - 60 < after < time.time() + 60


def test_a_kill_during_suspend_leaves_the_kept_state_and_erases_the_partial_one(
        tiny_context: str, tiny_paths: Paths) -> None:
    _run(tiny_context, "echo kept > /root/k; sync", on_exit="keep")
    kept = (tiny_paths.contexts_data / tiny_context / "current.json").read_bytes()
    files = _files(tiny_paths, tiny_context)
    # A session that fills 64 MiB of RAM, so that its suspend takes a while; killed in it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox_app", "run", tiny_context, "--headless",
         "--on-exit", "suspend", "--exec", FILL], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    data = tiny_paths.contexts_data / tiny_context
    while not any(p.name.startswith(("state-", "ram-")) and p.name not in files
                  for p in data.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    run_cli("context", "list")  # any command recovers after the dead session first
    assert (data / "current.json").read_bytes() == kept
    assert not (data / "suspended.json").exists()
    assert _files(tiny_paths, tiny_context) == files, "the partial suspend is erased"
    assert _out(_run(tiny_context, "cat /root/k")) == "kept\n"

"""A logout or shutdown (SIGTERM, SIGHUP) never loses a session: the real desktop app, started
as a user would (offscreen Qt), with a session of the tiny guest open, suspends it and exits
0 — no traceback, no QEMU left; the context then resumes where it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, run_cli

from sandbox_app.core.contexts import ContextStore, Journal, Profile
from sandbox_app.core.storage import Paths

pytestmark = pytest.mark.timeout(300)


def _qemu_pids(paths: Paths) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmd and str(paths.runtime).encode() in cmd:
                pids.append(int(proc.name))
    return pids


def _sessions_running(paths: Paths, names: set[str]) -> bool:
    """Each context has a session whose display socket is up (the app connects to it)."""
    running = {r.context for r in Journal(paths).records()
               if not r.id.startswith("prep-") and r.runtime_dir
               and any(Path(r.runtime_dir).glob("*vnc*"))}
    return names <= running


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_suspends_every_session_and_the_app_exits_0(
        tiny_paths: Paths, sig: signal.Signals) -> None:
    ContextStore(tiny_paths).create(Profile(name="s1", image="tiny"))
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    app = subprocess.Popen([sys.executable, "-m", "sandbox_app", "run", "s1"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.monotonic() + 120
    while not _sessions_running(tiny_paths, {"s1"}):
        assert app.poll() is None, app.communicate()
        assert time.monotonic() < deadline, "the session never came up"
        time.sleep(0.2)
    time.sleep(2)  # restored and running
    t0 = time.monotonic()
    app.send_signal(sig)
    _, err = app.communicate(timeout=60)
    exit_s = time.monotonic() - t0
    print(f"{sig.name} → exit: {exit_s:.2f} s")
    assert app.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert not _qemu_pids(tiny_paths), "no QEMU outlives the app"
    assert (tiny_paths.contexts_data / "s1" / "suspended.json").exists()
    r = run_cli("run", "s1", "--headless", "--json", "--resume", "--exec", "echo resumed")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["exec"][0]["stdout"] == "resumed\n"

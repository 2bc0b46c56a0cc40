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


def _listed(context: str) -> dict[str, object] | None:
    r = run_cli("session", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows: list[dict[str, object]] = json.loads(r.stdout)
    return next((row for row in rows if row["context"] == context), None)


def _wait_listed(context: str, proc: subprocess.Popen[str]) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while (row := _listed(context)) is None or row["state"] != "running":
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the session was never listed"
        time.sleep(0.5)
    return row


def test_session_list_and_suspend_reach_a_run_in_another_process(
        tiny_context: str, tiny_paths: Paths) -> None:
    run = subprocess.Popen(
        [sys.executable, "-m", "sandbox_app", "run", tiny_context, "--headless", "--json",
         "--exec", "echo before > /root/b; sync; sleep 120"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    row = _wait_listed(tiny_context, run)
    assert row["pid"] == run.pid and row["memory_mib"] and row["changed_bytes"] is not None
    time.sleep(2)  # the command is running
    r = run_cli("session", "suspend", tiny_context)
    assert r.returncode == 0 and "suspended" in r.stdout, r.stderr
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert json.loads(out)["on_exit"] == "suspend"
    assert (tiny_paths.contexts_data / tiny_context / "suspended.json").exists()
    assert _listed(tiny_context) is None
    r = run_cli("session", "stop", tiny_context)
    assert r.returncode != 0 and "no running session" in r.stderr
    r = run_cli("run", tiny_context, "--headless", "--json", "--resume", "--exec", "cat /root/b")
    assert json.loads(r.stdout)["exec"][0]["stdout"] == "before\n"


def test_session_stop_keep_reaches_the_app(tiny_paths: Paths) -> None:
    ContextStore(tiny_paths).create(Profile(name="s2", image="tiny"))
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    app = subprocess.Popen([sys.executable, "-m", "sandbox_app", "run", "s2"], cwd=REPO,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listed("s2", app)
        r = run_cli("session", "stop", "s2", "--keep")
        assert r.returncode == 0 and "kept" in r.stdout, r.stderr
        manifest = json.loads((tiny_paths.contexts_data / "s2" / "current.json").read_text())
        assert manifest["generation"] == 1 and app.poll() is None, "kept; the app goes on"
        assert _listed("s2") is None
    finally:
        app.send_signal(signal.SIGTERM)
        _, err = app.communicate(timeout=60)
    assert app.returncode == 0, err


def test_a_link_from_another_app_goes_to_the_running_app(tiny_paths: Paths) -> None:
    """``blankslate open URL --context C`` (what the desktop runs for a link) reaches the
    running app, which starts C's session there; no second app is started."""
    store = ContextStore(tiny_paths)
    for name in ("l1", "l2"):
        store.create(Profile(name=name, image="tiny"))
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    app = subprocess.Popen([sys.executable, "-m", "sandbox_app", "run", "l1"], cwd=REPO,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_listed("l1", app)
        r = run_cli("open", "https://example.test/", "--context", "l2", timeout=60)
        assert r.returncode == 0, r.stderr
        row = _wait_listed("l2", app)
        assert row["pid"] == app.pid, "the link's session runs in the app"
    finally:
        app.send_signal(signal.SIGTERM)
        _, err = app.communicate(timeout=60)
    assert app.returncode == 0, err

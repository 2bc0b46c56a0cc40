"""Suspend and resume times, and a logout (SIGTERM) of the app with two sessions open.

    python benchmarks/suspend.py [--image browser] [--rounds 3]

Engine (same run, same context): a golden start (baseline), a session suspended after a page
of RAM churn, the resume of it (start → running, and → the guest agent answers), and a keep
of the resumed session (the baseline of what a suspend costs). Then the real app (offscreen
Qt) with two contexts open, sent SIGTERM: the time until it exited (every session suspended).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _home import bench_home

from sandbox_app.core.contexts import ContextStore, Network, Profile
from sandbox_app.core.session import Session, discard_suspended
from sandbox_app.core.session.control import ask, live_sessions
from sandbox_app.core.storage import Paths

REPO = Path(__file__).resolve().parents[1]
CHURN = "dd if=/dev/urandom of=/dev/shm/churn bs=1M count=16 2>/dev/null; sync"


async def engine_round(paths: Paths, name: str) -> dict[str, float]:
    ctx = ContextStore(paths).get(name)
    t0 = time.monotonic()
    s = await Session.start(paths, ctx)
    golden_s = time.monotonic() - t0
    await s.ready()
    await s.exec(CHURN)
    suspend_s = (await s.suspend()).end_s
    t0 = time.monotonic()
    s = await Session.start(paths, ctx, resume=True)
    resume_s = time.monotonic() - t0
    await s.ready()
    ready_s = time.monotonic() - t0
    assert (await s.exec("test -e /dev/shm/churn && echo ok")).stdout == b"ok\n"
    keep_s = (await s.keep()).end_s
    return {"golden start": golden_s, "suspend": suspend_s, "resume → running": resume_s,
            "resume → agent": ready_s, "keep (baseline)": keep_s}


def _running(paths: Paths) -> set[str]:
    async def info() -> set[str]:
        names: set[str] = set()
        for pid in {r.owner_pid for r in live_sessions(paths)}:
            try:
                reply = await ask(paths, pid, {"op": "info"}, timeout=5)
            except Exception:  # not up yet
                continue
            names |= {i["context"] for i in reply["sessions"] if i["state"] == "running"}
        return names
    return asyncio.run(info())


def app_logout(paths: Paths, names: list[str]) -> float:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    app = subprocess.Popen([sys.executable, "-m", "sandbox_app", "run", names[0]], cwd=REPO,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while names[0] not in _running(paths):
            if app.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the app did not start a session: {app.communicate()[1]}")
            time.sleep(0.5)
        asyncio.run(ask(paths, app.pid, {"op": "open", "context": names[1]}))
        while not set(names) <= _running(paths):
            if app.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the second session did not start: {app.communicate()[1]}")
            time.sleep(0.5)
        time.sleep(3)
        t0 = time.monotonic()
        app.send_signal(signal.SIGTERM)
        _, err = app.communicate(timeout=120)
        exit_s = time.monotonic() - t0
    finally:
        if app.poll() is None:
            app.kill()
    if app.returncode != 0:
        raise SystemExit(f"the app exited {app.returncode}: {err}")
    missing = [n for n in names if not (paths.contexts_data / n / "suspended.json").exists()]
    if missing:
        raise SystemExit(f"not suspended: {missing}")
    return exit_s


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", default="browser")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with bench_home(args.image) as paths:
        store = ContextStore(paths)
        for name in ("one", "two"):
            store.create(Profile(name=name, image=args.image, network=Network.NONE))
        rows: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for k, t in (await engine_round(paths, "one")).items():
                rows.setdefault(k, []).append(t)
        exit_s = await asyncio.to_thread(app_logout, paths, ["one", "two"])
        for name in ("one", "two"):
            await discard_suspended(paths, store.get(name))
    print(f"{args.image} image, median of {args.rounds} (s):")
    for k, v in rows.items():
        print(f"  {k:<18} {statistics.median(v):6.2f}   ({', '.join(f'{x:.2f}' for x in v)})")
    print(f"  SIGTERM → exit, two sessions open, both suspended: {exit_s:.2f} s")
    medians = {k: statistics.median(v) for k, v in rows.items()}
    print(json.dumps({**medians, "sigterm_exit_s": exit_s}))


if __name__ == "__main__":
    asyncio.run(main())

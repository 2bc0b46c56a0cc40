"""Fault soak: kill -9 at random points of start, keep, compaction, discard and remove; QEMU
killed alone; a corrupt layer; disk full. After each fault: no orphan process, no leftover file
or socket, every context its old or its new state, ``context check`` clean, and it runs.

    python benchmarks/soak.py [--points N] [--seed S]

Uses the built ``tiny`` image of the current BLANKSLATE_HOME (built first if missing) in a
throwaway home. Prints one row a fault: how many were injected and how many were survived.
Disk-full rows need a small filesystem, so they run as root only (a tmpfs the size of a few
sessions); as a normal user they are reported as not run (``tests/test_recovery.py``'s root
tests cover them in ``make test``). Also run by ``tests/test_soak.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _home import bench_home  # noqa: E402

from sandbox_app.core.contexts import ContextStore, Profile, files_in_use  # noqa: E402
from sandbox_app.core.storage import Paths  # noqa: E402

OPS = ("start", "keep", "compaction", "discard", "remove")
KILL_WINDOW_S = {"start": 1.5, "keep": 2.5, "compaction": 3.5, "discard": 2.5, "remove": 0.4}
CONTEXT = "soak"


@dataclass
class Row:
    fault: str
    count: int = 0
    survived: int = 0
    failures: list[str] = field(default_factory=list)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandbox_app", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, check=False)


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sandbox_app", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _ours(paths: Paths) -> list[tuple[int, str]]:
    """Live QEMU processes of this home, and orphaned passt processes (a passt whose app
    died is reparented; passt's command line does not name the home)."""
    needles = (str(paths.data.parent).encode(), str(paths.runtime).encode())
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            status = (proc / "status").read_text()
        except OSError:
            continue
        name = cmd.split(b"\0", 1)[0].rsplit(b"/", 1)[-1].decode(errors="replace")
        if "zombie" in status:
            continue
        ppid = next((int(line.split()[1]) for line in status.splitlines()
                     if line.startswith("PPid:")), 0)
        if (name.startswith("qemu-system") and any(n in cmd for n in needles)) or \
                (name.startswith("passt") and ppid == 1):
            found.append((int(proc.name), name))
    return found


def check_invariants(paths: Paths, contexts: list[str]) -> None:
    """Raise AssertionError with a reason unless everything is clean and every context in
    ``contexts`` (if it still exists) is valid and runs."""
    assert cli("context", "list").returncode == 0, "context list failed"  # recovers
    deadline = time.monotonic() + 10
    while _ours(paths) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _ours(paths), f"orphan processes {_ours(paths)}"
    leftover = list(paths.runtime.iterdir()) if paths.runtime.exists() else []
    assert not leftover, f"runtime leftovers {leftover}"
    assert not list((paths.state / "sessions").glob("*.json")), "journal entries left"
    names = {c.name for c in ContextStore(paths).list()}
    data = paths.contexts_data
    orphans = [d.name for d in data.iterdir() if d.name not in names] if data.is_dir() else []
    assert not orphans, f"data of removed contexts left: {orphans}"
    for name in contexts:
        if name not in names:
            continue
        ctx_dir = data / name
        if ctx_dir.is_dir():
            extra = {p.name for p in ctx_dir.iterdir()} - files_in_use(ctx_dir)
            assert not extra, f"{name}: unreferenced files {extra}"
        check = cli("context", "check", name)
        assert check.returncode == 0, f"{name}: check failed: {check.stderr.strip()[-200:]}"
        run = cli("run", name, "--headless", "--json", "--exec", "true")
        assert run.returncode == 0, f"{name}: does not run: {run.stderr.strip()[-200:]}"


def _layers(paths: Paths, name: str) -> int:
    return len(ContextStore(paths).get(name).manifest().layers)


def _kill_point(paths: Paths, op: str, i: int, rng: random.Random) -> list[str]:
    """Inject one kill -9 into ``op``; returns the contexts to check afterwards."""
    args: tuple[str, ...]
    if op == "remove":
        name = f"gone{i}"
        ContextStore(paths).create(Profile(name=name, image="tiny"))
        assert cli("run", name, "--headless", "--on-exit", "keep",
                   "--exec", "echo x > /root/x; sync").returncode == 0
        args = ("context", "remove", name)
        checked = [name]
    else:
        if op == "compaction":  # three layers: the next keep adds a fourth and compacts
            while _layers(paths, CONTEXT) < 3:
                assert cli("run", CONTEXT, "--headless", "--on-exit", "keep",
                           "--exec", "sync").returncode == 0
        on_exit = "discard" if op in ("start", "discard") else "keep"
        args = ("run", CONTEXT, "--headless", "--on-exit", on_exit,
                "--exec", f"echo {i} > /root/f{i}; sync")
        checked = [CONTEXT]
    proc = _spawn(*args)
    time.sleep(rng.uniform(0.0, KILL_WINDOW_S[op]))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return checked


def _qemu_alone(paths: Paths) -> None:
    proc = _spawn("run", CONTEXT, "--headless", "--on-exit", "keep", "--exec", "sleep 60")
    deadline = time.monotonic() + 60
    while not (qemu := [p for p, n in _ours(paths) if n.startswith("qemu")]):
        assert time.monotonic() < deadline and proc.poll() is None, "QEMU never started"
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(qemu[0], signal.SIGKILL)
    assert proc.wait(timeout=60) != 0, "the run did not notice its QEMU died"


def _corrupt_layer(paths: Paths) -> None:
    if _layers(paths, CONTEXT) == 0:
        assert cli("run", CONTEXT, "--headless", "--on-exit", "keep", "--exec",
                   "sync").returncode == 0
    ctx = ContextStore(paths).get(CONTEXT)
    layer = ctx.data_dir / ctx.manifest().layers[-1].file
    original = layer.read_bytes()
    damaged = bytearray(original)
    for offset in range(0, min(len(damaged), 1 << 20), 4096):  # headers and tables
        damaged[offset:offset + 16] = os.urandom(16)
    layer.write_bytes(bytes(damaged))
    try:
        for args in (("context", "check", CONTEXT),
                     ("run", CONTEXT, "--headless", "--exec", "true")):
            proc = cli(*args)
            assert proc.returncode != 0, f"{args[0]} did not notice the corrupt layer"
            assert "Traceback" not in proc.stderr, proc.stderr[-300:]
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            assert 0 < len(last) < 300, f"{args[0]}: not a one-line error: {last[:400]!r}"
    finally:
        layer.write_bytes(original)


def _disk_full(paths: Paths, during: str) -> None:
    """A session's home on a 48 MiB tmpfs (root only): disk full during keep or a session."""
    with tempfile.TemporaryDirectory(prefix="blankslate-soak-full-") as tmp:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "soak", tmp], check=True)
        try:
            os.environ["BLANKSLATE_HOME"] = f"{tmp}/home"
            try:
                small = Paths.from_env().ensure()
                small.images.symlink_to(paths.images.resolve())
                ContextStore(small).create(Profile(name="full", image="tiny"))
                fill = ("mkdir -p /run/f && mount -t tmpfs f /run/f && "
                        "dd if=/dev/urandom of=/run/f/x bs=1M count=96 2>/dev/null")
                cmd = fill if during == "keep" else \
                    "dd if=/dev/urandom of=/root/big bs=1M count=96 2>/dev/null; sync"
                proc = cli("run", "full", "--headless", "--on-exit", "keep", "--exec", cmd)
                assert proc.returncode == 6, f"exit {proc.returncode}: {proc.stderr[-300:]}"
                assert "Traceback" not in proc.stderr
                check_invariants(small, ["full"])
            finally:
                os.environ["BLANKSLATE_HOME"] = str(paths.data.parent)
        finally:
            subprocess.run(["umount", "-l", tmp], check=False)


def soak(paths: Paths, points: int, seed: int,
         say: Callable[[str], None] = print) -> list[Row]:
    """Run the faults against ``paths`` (BLANKSLATE_HOME must point at it)."""
    rng = random.Random(seed)
    ContextStore(paths).create(Profile(name=CONTEXT, image="tiny"))
    rows = {op: Row(f"kill -9 during {op}") for op in OPS}
    for i in range(points):
        op = OPS[i % len(OPS)] if i < len(OPS) else rng.choice(OPS)
        row = rows[op]
        row.count += 1
        try:
            check_invariants(paths, _kill_point(paths, op, i, rng))
            row.survived += 1
            say(f"  point {i + 1:>2}/{points}: {op:<10} ok")
        except AssertionError as exc:
            row.failures.append(f"point {i}: {exc}")
            say(f"  point {i + 1:>2}/{points}: {op:<10} FAILED: {exc}")
    extra: list[tuple[str, Callable[[], None]]] = [
        ("QEMU killed alone", lambda: _qemu_alone(paths)),
        ("a corrupt layer", lambda: _corrupt_layer(paths)),
    ]
    if os.geteuid() == 0:
        extra += [("disk full during keep", lambda: _disk_full(paths, "keep")),
                  ("disk full during a session", lambda: _disk_full(paths, "session"))]
    out = list(rows.values())
    for fault, inject in extra:
        row = Row(fault, 1)
        try:
            inject()
            check_invariants(paths, [CONTEXT])
            row.survived = 1
        except (AssertionError, subprocess.SubprocessError) as exc:
            row.failures.append(str(exc))
        out.append(row)
    if os.geteuid() != 0:
        out.append(Row("disk full (keep, session): not run here, needs root; "
                       "tests/test_recovery.py root tests"))
    return out


def print_table(rows: list[Row]) -> None:
    print(f"{'fault':<44} {'count':>5} {'survived':>8}")
    for r in rows:
        print(f"{r.fault:<44} {r.count:>5} {r.survived:>8}")
        for f in r.failures:
            print(f"    {f}")
    kills = [r for r in rows if r.fault.startswith("kill -9")]
    print(f"kill points survived: {sum(r.survived for r in kills)}/{sum(r.count for r in kills)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with bench_home("tiny") as paths:
        rows = soak(paths, args.points, args.seed)
    print_table(rows)
    return 0 if all(r.survived == r.count for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

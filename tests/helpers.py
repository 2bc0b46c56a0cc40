"""Helpers shared by tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from sandbox_app.core.storage import Paths

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None,
            input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``blankslate`` command as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox_app", *args],
        check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO, input=input,
        env={**os.environ, **(env or {})},
    )


def run_session(context: str, *cmds: str, on_exit: str = "discard", stdin: str | None = None,
                extra: tuple[str, ...] = ()) -> dict[str, object]:
    """``blankslate run CONTEXT --headless --json`` with ``cmds`` as ``--exec``: the report
    (the run must succeed)."""
    args = ["run", context, "--headless", "--json", "--on-exit", on_exit, *extra]
    for c in cmds:
        args += ["--exec", c]
    proc = run_cli(*args, input=stdin)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout)
    return out


def exec_stdout(report: dict[str, object], i: int = 0) -> str:
    """What the ``i``-th ``--exec`` of a run report printed."""
    return report["exec"][i]["stdout"]  # type: ignore[index,no-any-return]


def private_tiny(paths: Paths) -> None:
    """Replace a home's link to the shared image store by a copy of the tiny image alone.

    For tests that corrupt or rebuild snapshot points; copying the whole store would copy
    the browser image too (gigabytes per test, kept by pytest for the last runs).
    """
    shared = paths.images.resolve()
    paths.images.unlink()
    paths.images.mkdir()
    shutil.copytree(shared / "tiny", paths.images / "tiny")


class FakeKeyring:
    """A keyring-like backend kept in memory (priority ≥ 1: a real one, as far as the app
    can tell)."""

    priority = 5

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], str] = {}

    def set_password(self, service: str, user: str, secret: str) -> None:
        self.items[service, user] = secret

    def get_password(self, service: str, user: str) -> str | None:
        return self.items.get((service, user))

    def delete_password(self, service: str, user: str) -> None:
        del self.items[service, user]

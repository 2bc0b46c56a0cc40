"""Helpers shared by tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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

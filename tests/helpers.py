"""Helpers shared by tests."""

from __future__ import annotations

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

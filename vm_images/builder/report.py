"""What a build tells its caller: progress (stdout), the log (stderr, build.log), BuildError.

The progress protocol is what the image store parses (``sandbox_app/core/images``): one JSON
object a line on stdout, ``{"phase": "<text>", "fraction": <0..1, or null when unknown>}``;
anything else on stdout is ignored. The last stderr line of a failed build is the error the
user sees.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO


class BuildError(Exception):
    """A build step failed; the message is the one line shown to the user."""


def progress(phase: str, fraction: float | None) -> None:
    """Report the phase the build is in and how far it is (0..1; None: no estimate)."""
    value = None if fraction is None else round(fraction, 3)
    print(json.dumps({"phase": phase, "fraction": value}), flush=True)


class Log:
    """Human log to stderr and, once opened, ``OUTDIR/build.log`` (with command output)."""

    def __init__(self) -> None:
        self.name = "build"  # the recipe's name, set by main()
        self.file: IO[str] | None = None
        self.started = time.monotonic()

    def open(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def info(self, msg: str) -> None:
        line = f"{self.name}: [{time.monotonic() - self.started:6.1f}s] {msg}"
        print(line, file=sys.stderr, flush=True)
        self.raw(line)

    def error(self, msg: str) -> None:
        """The one-line failure the image store shows (the last line on stderr)."""
        self.raw(f"error: {msg}")
        print(f"{self.name}: error: {msg}", file=sys.stderr, flush=True)

    def raw(self, line: str) -> None:
        """Into the build log only (command output)."""
        if self.file is not None:
            self.file.write(line.rstrip("\n") + "\n")
            self.file.flush()


log = Log()

"""Running host commands: their output into the build log, failures as one-line BuildErrors."""

from __future__ import annotations

import collections
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from .report import BuildError, log

# Debian keeps mke2fs, chroot and friends there, off a normal user's PATH.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")

_child: subprocess.Popen[str] | None = None  # the command run() waits for (SIGTERM stops it)


def _failed(args: list[str], returncode: int, last_line: str | None) -> BuildError:
    what = " ".join([Path(args[0]).name, *args[1:2]])
    return BuildError(f"{what} failed (exit {returncode}): {last_line or 'no output'}")


def run(*argv: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
        on_line: Callable[[str], None] | None = None) -> None:
    """Run a command, its output (stdout and stderr) into the build log and to ``on_line``;
    raise BuildError with its last line when it fails."""
    global _child  # noqa: PLW0603  (the SIGTERM handler stops it)
    args = [str(a) for a in argv]
    log.raw("$ " + shlex.join(args))
    tail: collections.deque[str] = collections.deque(maxlen=1)
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                env=env, cwd=cwd)
    except FileNotFoundError as exc:
        raise BuildError(f"{exc.filename or args[0]} not found") from exc
    with proc:
        _child = proc
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.raw(line)
                if line.strip():
                    tail.append(line.strip())
                if on_line is not None:
                    on_line(line)
        except BaseException:
            proc.terminate()
            raise
        finally:
            _child = None
            proc.wait()
    if proc.returncode != 0:
        raise _failed(args, proc.returncode, tail[-1] if tail else None)


def capture(*argv: str | Path, stdin: bytes | None = None, cwd: Path | None = None) -> bytes:
    """Run a short command (a query, or a filter fed ``stdin``) and return its stdout."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(args, input=stdin, cwd=cwd, capture_output=True, check=False,
                              stdin=subprocess.DEVNULL if stdin is None else None)
    except FileNotFoundError as exc:
        raise BuildError(f"{exc.filename or args[0]} not found") from exc
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise _failed(args, proc.returncode, lines[-1] if lines else None)
    return proc.stdout


def tool(name: str, package: str) -> str:
    """A host tool, also where Debian puts system tools (not on a normal user's PATH), or a
    one-line error naming its Debian package."""
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))
    if path is None:
        raise BuildError(f"{name} not found: install the Debian package '{package}'")
    return path


def stop_on_sigterm() -> None:
    """On SIGTERM (the app cancelling the build), stop the running command too, then exit
    through the normal clean-up."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if _child is not None and _child.poll() is None:
            _child.terminate()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)

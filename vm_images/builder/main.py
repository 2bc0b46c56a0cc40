"""A recipe's command line, and the frame every build runs in.

    python3 vm_images/<recipe>/build.py --out OUTDIR --cache CACHEDIR

OUTDIR gets ``vmlinuz``, ``initrd.img``, ``root.qcow2`` and ``build.log``, then ``recipe.json``
last; CACHEDIR keeps downloads and the unpacked kernel between builds. Exit code 0, or 1 with
a one-line error as the last line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import lzma
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from .commands import stop_on_sigterm
from .files import remove
from .recipe import Recipe, write_recipe
from .report import BuildError, log, progress

# What a failed step raises (anything else is a bug in the recipe: a traceback).
FAILURES = (BuildError, OSError, EOFError, lzma.LZMAError, zlib.error, StopIteration,
            subprocess.SubprocessError)

Build = Callable[[Path, Path, Path], None]  # (out, cache, work)


def main(recipe: Recipe, build: Build, *, description: str,
         in_namespace: Callable[[Path], None] | None = None) -> int:
    """Parse the command line and run ``build(out, cache, work)``, then write ``recipe.json``.

    ``work`` (``OUTDIR/.work``) is empty at the start and removed at the end. With
    ``in_namespace``, the hidden option ``--in-namespace ROOTFS`` runs that step instead (a
    recipe's own script run again, by a hook inside mmdebstrap's namespace).
    """
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", type=Path, required=in_namespace is None)
    ap.add_argument("--cache", type=Path, required=in_namespace is None)
    if in_namespace is not None:
        ap.add_argument("--in-namespace", type=Path, metavar="ROOTFS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    log.name = recipe.name
    stop_on_sigterm()
    if in_namespace is not None and args.in_namespace is not None:
        # Its output goes through the hook into the outer build's log.
        try:
            in_namespace(args.in_namespace)
            return 0
        except FAILURES as exc:
            log.error(str(exc) or type(exc).__name__)
            return 1
    if args.out is None or args.cache is None:
        ap.error("--out and --cache are required")
    out: Path = args.out.resolve()
    cache: Path = args.cache.resolve()
    work = out / ".work"
    try:
        out.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        (out / "recipe.json").unlink(missing_ok=True)
        log.open(out / "build.log")
        remove(work)
        work.mkdir()
        build(out, cache, work)
        write_recipe(out, recipe)  # last: its presence tells the image store it is complete
    except FAILURES as exc:
        log.error(str(exc) or type(exc).__name__)
        return 1
    finally:
        with contextlib.suppress(OSError):
            remove(work)
    progress("done", 1.0)
    log.info(f"built in {time.monotonic() - log.started:.1f}s")
    return 0


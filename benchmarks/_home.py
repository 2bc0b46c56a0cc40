"""The benchmarks' one set-up helper: the images a benchmark needs, found or built, and a
throwaway home for its contexts.

``with bench_home("tiny") as paths:`` first makes sure the current BLANKSLATE_HOME (or the
platform's data dir) holds a current ``tiny`` image — building it when missing or when its
recipe changed, exactly as ``blankslate image build tiny`` does (the tiny image takes a few
minutes, the browser image much longer) — then yields a temporary home whose image store is
that one, so a benchmark never touches the user's contexts.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sandbox_app.core.images.recipe import RECIPES
from sandbox_app.core.storage import Paths

REPO = Path(__file__).resolve().parents[1]
# The CLI run for a build imports sandbox_app from this checkout, installed or not.
_ENV = {**os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


class SetupError(SystemExit):
    """A benchmark cannot start: one line on stderr, exit code 1 (a SystemExit, no traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"benchmark set-up: {message}")


def ensure_images(*images: str) -> Paths:
    """Find or build each image in the current home's store (``blankslate image build``: a
    current image is only checked); return that home's paths."""
    for name in images:
        if name not in RECIPES:
            raise SetupError(f"unknown image '{name}' (one of: {', '.join(RECIPES)})")
        print(f"benchmark set-up: image '{name}' (built if missing or stale)", file=sys.stderr)
        proc = subprocess.run([sys.executable, "-m", "sandbox_app", "image", "build", name],
                              stdin=subprocess.DEVNULL, check=False, env=_ENV)
        if proc.returncode != 0:
            raise SetupError(f"image '{name}' could not be built (exit {proc.returncode})")
    return Paths.from_env().ensure()


@contextlib.contextmanager
def bench_home(*images: str, same_disk: bool = False) -> Iterator[Paths]:
    """A temporary BLANKSLATE_HOME whose images are those of the current one (or the
    platform's data dir), with ``images`` found or built there first. With ``same_disk`` it
    is made next to the real data dir (for disk-speed comparisons)."""
    source = ensure_images(*images)
    where = str(source.data.parent) if same_disk else None
    old = os.environ.get("BLANKSLATE_HOME")
    with tempfile.TemporaryDirectory(prefix="blankslate-bench-", dir=where) as tmp:
        os.environ["BLANKSLATE_HOME"] = tmp
        os.environ.setdefault("BLANKSLATE_KEYRING", "off")
        try:
            paths = Paths.from_env().ensure()
            paths.images.symlink_to(Path(source.images).resolve())
            # A benchmark's app never starts rebuilding the images it measures.
            (paths.config / "app.toml").write_text("image_update_days = 0\n")
            yield paths
        finally:
            if old is None:
                os.environ.pop("BLANKSLATE_HOME", None)
            else:
                os.environ["BLANKSLATE_HOME"] = old

"""The benchmarks' throwaway home: its own contexts, the real (built) image store."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sandbox_app.core.storage import Paths


@contextlib.contextmanager
def bench_home(same_disk: bool = False) -> Iterator[Paths]:
    """A temporary BLANKSLATE_HOME whose images are those of the current one (or the
    platform's data dir), so a benchmark never touches the user's contexts. With
    ``same_disk`` it is made next to the real data dir (for disk-speed comparisons)."""
    source = Paths.from_env()
    where = str(source.data.parent) if same_disk else None
    old = os.environ.get("BLANKSLATE_HOME")
    with tempfile.TemporaryDirectory(prefix="blankslate-bench-", dir=where) as tmp:
        os.environ["BLANKSLATE_HOME"] = tmp
        os.environ.setdefault("BLANKSLATE_KEYRING", "off")
        try:
            paths = Paths.from_env().ensure()
            paths.images.symlink_to(Path(source.images).resolve())
            yield paths
        finally:
            if old is None:
                os.environ.pop("BLANKSLATE_HOME", None)
            else:
                os.environ["BLANKSLATE_HOME"] = old

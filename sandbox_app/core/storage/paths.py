"""Where Blank Slate keeps its files.

``BLANKSLATE_HOME=DIR`` relocates everything (config, data, state, runtime) under one
directory; tests use it. Otherwise the platform's conventions apply (platformdirs).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ..errors import UsageError

APP = "blankslate"
_MAX_RUNTIME_LEN = 64  # + "/s-XXXXXXXXXXXX/vnc.sock" stays under the 107-byte socket limit
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")  # fullmatch: "$" would allow a final \n


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a safe identifier (no ``/``, ``..``, control chars…)."""
    if not _NAME_RE.fullmatch(name):
        shown = name.encode("unicode_escape").decode("ascii")[:40]
        raise UsageError(
            f"invalid {what} '{shown}': use 1-32 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it 0700, owned by us."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.lstat()  # in /tmp, someone else may have made it first (or a symlink)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise UsageError(f"{path} is not a directory of ours: refusing to use it")
    os.chmod(path, 0o700)
    return path


@dataclass(frozen=True)
class Paths:
    """The four roots. ``runtime`` holds one 0700 directory per running session."""

    config: Path
    data: Path
    state: Path
    runtime: Path

    @classmethod
    def from_env(cls) -> Paths:
        home = os.environ.get("BLANKSLATE_HOME")
        if home:
            root = Path(home).absolute()
            runtime = root / "run"
            if len(str(runtime)) > _MAX_RUNTIME_LEN:
                # Unix socket paths are limited to 107 bytes: a deep home gets a short
                # runtime dir of its own in /tmp instead.
                digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
                runtime = Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}-{digest}"
            return cls(root / "config", root / "data", root / "state", runtime)
        if os.environ.get("XDG_RUNTIME_DIR"):
            runtime_base = Path(platformdirs.user_runtime_dir(APP))
        else:
            # No XDG_RUNTIME_DIR (e.g. root without logind): a private dir in /tmp.
            runtime_base = Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}"
        return cls(
            Path(platformdirs.user_config_dir(APP)),
            Path(platformdirs.user_data_dir(APP)),
            Path(platformdirs.user_state_dir(APP)),
            runtime_base,
        )

    def ensure(self) -> Paths:
        for p in (self.config, self.data, self.state, self.runtime):
            private_dir(p)
        return self

    @property
    def images(self) -> Path:
        return self.data / "images"

    @property
    def contexts_data(self) -> Path:
        return self.data / "contexts"

    @property
    def contexts_config(self) -> Path:
        return self.config / "contexts"

    @property
    def logs(self) -> Path:
        """The log files' folder: ``log`` in the state dir, which is platformdirs'
        ``user_log_dir`` on Linux (``~/.local/state/blankslate/log``), and under
        ``BLANKSLATE_HOME`` when that is set."""
        return self.state / "log"

    @property
    def cache(self) -> Path:
        """Downloaded packages and other inputs of image builds (safe to delete)."""
        return self.data / "cache"

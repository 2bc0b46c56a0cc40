"""App-wide settings: ``config/app.toml``.

    standby = "auto"   # keep a paused QEMU ready for the most recently used context:
                       # "on", "off", or "auto" (on while the host has the memory to spare)
    passphrase_idle_minutes = 15   # the app asks again for a context's passphrase when
                                   # none of its sessions ran for this long (0: every start)
    backup_target = "/media/usb/blankslate"   # or "s3://BUCKET/PREFIX"; "" for none yet
    backup_s3_endpoint = "https://s3.example.com"   # "" for AWS (or AWS_ENDPOINT_URL)

The backup settings are the app's (Backup settings…); the S3 credentials are never here:
they are in the OS keyring (``core.backup.credentials``).

A missing file means the defaults; a broken one is logged and ignored (defaults), never an
error that stops the app.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..backup import check_endpoint, check_target_spec
from ..errors import BlankSlateError, UsageError
from ..storage import Paths, atomic_write_bytes, private_dir

log = logging.getLogger(__name__)

STANDBY_CHOICES = ("auto", "on", "off")
STANDBY_HEADROOM_MIB = 1024
"""With ``standby = "auto"``: free memory a standby needs beyond its session's own RAM."""


@dataclass(frozen=True)
class AppSettings:
    standby: str = "auto"
    passphrase_idle_minutes: float = 15.0
    link_context: str = "personal"  # where `blankslate open URL` (links from other apps) go
    image_update_days: int = 7  # the app rebuilds an image older than this; 0: never
    backup_target: str = ""  # a folder or s3://BUCKET/PREFIX ("": not chosen yet)
    backup_s3_endpoint: str = ""  # "": AWS, or AWS_ENDPOINT_URL

    @classmethod
    def load(cls, paths: Paths) -> AppSettings:
        path = paths.config / "app.toml"
        try:
            data = tomllib.loads(path.read_text())
            standby = data.get("standby", "auto")
            if standby not in STANDBY_CHOICES:
                raise ValueError(f"standby must be one of {', '.join(STANDBY_CHOICES)}")
            idle = data.get("passphrase_idle_minutes", 15.0)
            if isinstance(idle, bool) or not isinstance(idle, int | float) or \
                    not 0 <= idle <= 7 * 24 * 60:
                raise ValueError("passphrase_idle_minutes must be 0 to 10080")
            link = data.get("link_context", "personal")
            if not isinstance(link, str):
                raise ValueError("link_context must be a context name")
            days = data.get("image_update_days", 7)
            if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 3650:
                raise ValueError("image_update_days must be 0 (never) to 3650")
            target = _backup_setting(data, "backup_target", check_target_spec)
            endpoint = _backup_setting(data, "backup_s3_endpoint", check_endpoint)
            return cls(standby=standby, passphrase_idle_minutes=float(idle), link_context=link,
                       image_update_days=days, backup_target=target,
                       backup_s3_endpoint=endpoint)
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            return cls()


def _backup_setting(data: dict[str, object], key: str, check: Callable[[str], str]) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    if not value:
        return ""
    try:
        return check(value)
    except BlankSlateError as exc:
        raise ValueError(f"{key}: {exc}") from None


def save_backup_settings(paths: Paths, target: str, endpoint: str) -> AppSettings:
    """Set ``backup_target`` and ``backup_s3_endpoint`` in app.toml (checked first: a
    UsageError says what is wrong), leaving its other lines and comments as they are.
    Returns the settings now in effect."""
    target = check_target_spec(target) if target.strip() else ""
    endpoint = check_endpoint(endpoint)
    path = paths.config / "app.toml"
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    for key, value in (("backup_target", target), ("backup_s3_endpoint", endpoint)):
        # A JSON string is a TOML basic string (both escape \\, " and control characters).
        line = f"{key} = {json.dumps(value, ensure_ascii=False)}"
        pattern = re.compile(rf"^[ \t]*{key}[ \t]*=.*$", re.MULTILINE)
        text, found = pattern.subn(line.replace("\\", "\\\\"), text, count=1)
        if not found:
            text += ("" if not text or text.endswith("\n") else "\n") + line + "\n"
    try:
        tomllib.loads(text)  # never write a file the next load would ignore
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML ({exc}): fix it first") from None
    private_dir(paths.config)
    atomic_write_bytes(path, text.encode())
    return AppSettings.load(paths)


def available_mib(meminfo: Path = Path("/proc/meminfo")) -> int:
    """MemAvailable, in MiB (0 when unknown)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def standby_allowed(settings: AppSettings, memory_mib: int) -> bool:
    """Whether a standby QEMU for a context of ``memory_mib`` may be kept now."""
    if settings.standby != "auto":
        return settings.standby == "on"
    return available_mib() >= memory_mib + STANDBY_HEADROOM_MIB

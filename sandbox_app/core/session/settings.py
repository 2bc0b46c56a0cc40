"""App-wide settings: ``config/app.toml``.

    standby = "auto"   # keep a paused QEMU ready for the most recently used context:
                       # "on", "off", or "auto" (on while the host has the memory to spare)
    passphrase_idle_minutes = 15   # the app asks again for a context's passphrase when
                                   # none of its sessions ran for this long (0: every start)

A missing file means the defaults; a broken one is logged and ignored (defaults), never an
error that stops the app.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..storage import Paths

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
            return cls(standby=standby, passphrase_idle_minutes=float(idle), link_context=link,
                       image_update_days=days)
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("ignoring %s: %s", path, exc)
            return cls()


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

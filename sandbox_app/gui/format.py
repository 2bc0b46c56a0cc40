"""How the GUI writes numbers for people (Qt-free: views and jobs use it)."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """1536 → '1.5 KiB' (sizes shown to the user)."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def age(seconds: float) -> str:
    """How long ago, in words: 'just now', '5 minutes ago', '3 days ago' (image ages)."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        n = int(seconds // size)
        if n >= 1:
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"

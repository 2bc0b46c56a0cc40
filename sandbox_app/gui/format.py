"""How the GUI writes numbers for people (Qt-free: views and jobs use it)."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """1536 → '1.5 KiB' (sizes shown to the user)."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"

"""Progress reporting for long operations, shared by the CLI and the GUI.

Long operations are coroutines: cancelling their task cancels them (``asyncio`` semantics),
and each one cleans up what it started. They report through a ``Progress`` callback.
"""

from __future__ import annotations

from collections.abc import Callable

# (phase description, fraction done in [0, 1] or None when unknown)
Progress = Callable[[str, float | None], None]


def no_progress(_phase: str, _fraction: float | None) -> None:
    """A Progress that ignores everything."""

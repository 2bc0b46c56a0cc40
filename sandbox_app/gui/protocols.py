"""What the launcher and the tray read from the app (``controller.App`` provides it).

The views type against this, never against the controller: the app side imports the
views, not the reverse.
"""

from __future__ import annotations

from typing import Protocol

from ..core.contexts import Context
from ..core.session import RunState
from ..core.storage import Paths
from .asyncbridge import JobRunner
from .signals import AppSignals


class AppState(Protocol):
    """The app as the views see it: its signals and read-only state."""

    signals: AppSignals
    paths: Paths
    jobs: JobRunner

    def state(self, name: str) -> RunState: ...

    def warnings(self, name: str) -> list[str]:
        """What the context's session warns about (TCG, no network guard, key unprotected)."""
        ...

    def image_note(self, context: Context) -> str:
        """"updates available" and why, or ""."""
        ...

    def running(self) -> list[str]:
        """The contexts with a session (in any state but stopped)."""
        ...

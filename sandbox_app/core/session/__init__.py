"""One running session of a context, from restore to keep or discard, and the runner
that owns a context's session and its prepared spare overlay.
"""

from .address import address_to_url
from .overlay import PreparedOverlay, check_context, prepare_overlay
from .runner import ContextRunner, RunState, accel_warning
from .session import EndReport, Session, SessionState, SuspendedError, discard_suspended
from .settings import AppSettings
from .sleepwatch import SleepWatch

__all__ = [
    "AppSettings",
    "ContextRunner",
    "EndReport",
    "PreparedOverlay",
    "RunState",
    "Session",
    "SessionState",
    "SleepWatch",
    "SuspendedError",
    "accel_warning",
    "address_to_url",
    "check_context",
    "discard_suspended",
    "prepare_overlay",
]

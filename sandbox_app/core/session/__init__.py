"""One running session of a context, from restore to keep or discard, and the runner
that owns a context's session and its prepared spare overlay.
"""

from .address import address_to_url
from .runner import ContextRunner, RunState, accel_warning
from .session import EndReport, Session, SessionState, check_context, prepare_overlay

__all__ = [
    "ContextRunner",
    "EndReport",
    "RunState",
    "Session",
    "SessionState",
    "accel_warning",
    "address_to_url",
    "check_context",
    "prepare_overlay",
]

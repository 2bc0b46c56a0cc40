"""Clipboard text between host and guest: explicit, one direction at a time, per policy.

Each context has a policy (``ClipboardPolicy``): ``off``, ``host-to-guest`` (the default)
or ``both``. Nothing here runs on its own: the app copies only when the user asks (a menu
action, a shortcut, a CLI option), so a guest never learns what the host copied, nor
plants text in the host clipboard, behind the user's back.

The guest side is the image's own pair of commands (``clipboard_set_command`` reads the
text on stdin, ``clipboard_get_command`` writes it on stdout; see each recipe), run
through the guest agent. What the guest sends back is untrusted: its size is capped,
it must be UTF-8, and control characters other than tab and newlines are removed (an
escape sequence pasted into a host terminal could otherwise act on it). Each call has a
timeout, so a guest that stalls costs the user a few seconds and an error, not a hang.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from ..errors import BlankSlateError, GuestError, UsageError
from .agent import ExecResult, GuestAgent

MAX_TEXT_BYTES = 1 << 20
"""Longest clipboard text copied either way (UTF-8 bytes)."""

TIMEOUT_S = 15.0
"""How long the guest's clipboard command may take (TCG guests are slow, not stuck)."""

_KEEP_CONTROLS = frozenset("\t\n\r")


class ClipboardPolicy(Enum):
    """Which way clipboard text may go for a context."""

    OFF = "off"
    HOST_TO_GUEST = "host-to-guest"
    BOTH = "both"

    @property
    def to_guest(self) -> bool:
        return self is not ClipboardPolicy.OFF

    @property
    def from_guest(self) -> bool:
        return self is ClipboardPolicy.BOTH


class Recipe(Protocol):
    """What clipboard copying needs from an image's recipe (``images.Recipe`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def clipboard_set_command(self) -> tuple[str, ...]: ...
    @property
    def clipboard_get_command(self) -> tuple[str, ...]: ...


class ClipboardRefused(UsageError):
    """The context's clipboard policy forbids this direction (or the image has none)."""


def refusal(recipe: Recipe, policy: ClipboardPolicy, *, to_guest: bool) -> str | None:
    """Why a copy in this direction is not allowed, or None if it is (for greying out)."""
    if to_guest and not policy.to_guest:
        return "clipboard sharing is off for this context"
    if not to_guest and not policy.from_guest:
        return ("this context's clipboard policy does not allow copying from the guest "
                f"(policy: {policy.value})")
    command = recipe.clipboard_set_command if to_guest else recipe.clipboard_get_command
    if not command:
        return f"the '{recipe.name}' image has no clipboard"
    return None


def _why(res: ExecResult) -> str:
    """The guest command's last words, made safe for a one-line message."""
    return clean_text(res.stderr.decode(errors="replace")).strip()[-200:].replace("\n", " ")


def clean_text(text: str) -> str:
    """``text`` without NULs and control characters (tab and newlines stay)."""
    return "".join(c for c in text
                   if c in _KEEP_CONTROLS or not (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0))


async def copy_to_guest(agent: GuestAgent, recipe: Recipe, policy: ClipboardPolicy,
                        text: str) -> int:
    """Put ``text`` into the guest clipboard; returns the bytes sent.

    Raises ClipboardRefused when the policy (or the image) does not allow it, before the
    guest is asked anything.
    """
    why = refusal(recipe, policy, to_guest=True)
    if why:
        raise ClipboardRefused(why)
    data = text.replace("\0", "").encode("utf-8", "replace")
    if len(data) > MAX_TEXT_BYTES:
        raise BlankSlateError(f"the clipboard text is larger than the "
                              f"{MAX_TEXT_BYTES >> 20} MiB limit")
    res = await agent.exec(list(recipe.clipboard_set_command), input=data, timeout=TIMEOUT_S)
    if res.exit_code != 0:
        raise GuestError("the guest did not take the clipboard text: " + _why(res))
    return len(data)


async def copy_from_guest(agent: GuestAgent, recipe: Recipe, policy: ClipboardPolicy) -> str:
    """The guest clipboard's text, checked and cleaned (see the module's docstring).

    Raises ClipboardRefused when the policy (or the image) does not allow it, before the
    guest is asked anything.
    """
    why = refusal(recipe, policy, to_guest=False)
    if why:
        raise ClipboardRefused(why)
    res = await agent.exec(list(recipe.clipboard_get_command), timeout=TIMEOUT_S)
    if res.exit_code != 0:
        raise GuestError("could not read the guest clipboard: " + _why(res))
    if res.truncated or len(res.stdout) > MAX_TEXT_BYTES:
        raise GuestError(f"the guest clipboard holds more than the "
                         f"{MAX_TEXT_BYTES >> 20} MiB limit: nothing copied")
    try:
        text = res.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise GuestError("the guest clipboard does not hold UTF-8 text: nothing copied") \
            from None
    return clean_text(text)

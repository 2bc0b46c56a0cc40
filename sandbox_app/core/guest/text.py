"""Guest text made safe to show on the host.

What a guest prints is data, never terminal control: an escape sequence in a command's output
could retitle the terminal, rewrite what is on screen or, through OSC 52, set the host's
clipboard; bidi and zero-width controls make shown text differ from what it is ("Trojan
Source"). So whole escape sequences (CSI, OSC, DCS/SOS/PM/APC, 7-bit and 8-bit) go first, then
every other control and format character; newlines and tabs stay.
"""

from __future__ import annotations

import re
import unicodedata

# ESC or its 8-bit C1 form, then: a CSI sequence; a string sequence (OSC, DCS, SOS, PM, APC)
# up to its terminator (BEL or ST) or the end; or any other single escape.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?",
    re.DOTALL,
)
_KEEP = frozenset("\n\t")


def terminal_safe(text: str) -> str:
    """``text`` without terminal escape sequences and without control or format characters
    (C0/C1 controls, carriage returns, bidi overrides and isolates, zero-width characters)
    but for newline and tab."""
    text = _ESCAPES.sub("", text)
    return "".join(c for c in text
                   if c in _KEEP or unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co"))


def guest_detail(data: bytes | str, limit: int = 200) -> str:
    """The end of a guest's output (e.g. its stderr) for a one-line message: made safe,
    whitespace runs collapsed, at most ``limit`` characters."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    text = " ".join(terminal_safe(text).split())
    return text if len(text) <= limit else "…" + text[-(limit - 1):]

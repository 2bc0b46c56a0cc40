"""Is there a graphical display to open a window on? Asked before Qt is imported.

Qt's platform plugins abort the process (SIGABRT, exit 134) when they find no display server,
so the command line checks first and says so in one line instead. Qt-free.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

# Qt platforms that talk to a display server; any other (offscreen, vnc, eglfs…) needs none.
_X11 = {"xcb"}
_WAYLAND = {"wayland", "wayland-egl"}
_CONNECT_TIMEOUT_S = 2.0


def _reachable(family: int, address: str | tuple[str, int]) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(_CONNECT_TIMEOUT_S)
        try:
            s.connect(address)
        except OSError:
            return False
        return True


def _x11_answers(display: str) -> bool:
    """``:N``, ``unix:N`` (local socket) or ``host:N`` (TCP 6000+N); others are trusted."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit() or host.startswith("/"):
        return True  # a form we do not parse (e.g. a launchd path): let Qt try
    if host in ("", "unix"):
        sock = f"/tmp/.X11-unix/X{number}"
        return _reachable(socket.AF_UNIX, "\0" + sock) or _reachable(socket.AF_UNIX, sock)
    return _reachable(socket.AF_INET, (host, 6000 + int(number)))


def _wayland_answers(name: str, environ: Mapping[str, str]) -> bool:
    path = Path(name) if name.startswith("/") else \
        Path(environ.get("XDG_RUNTIME_DIR", "/nonexistent")) / name
    return _reachable(socket.AF_UNIX, str(path))


def missing_display(environ: Mapping[str, str] | None = None) -> str | None:
    """Why no window can open here (one line), or ``None`` when a display is there or the
    chosen Qt platform needs none (``QT_QPA_PLATFORM=offscreen``, ``vnc``…)."""
    env = os.environ if environ is None else environ
    platforms = {p.split(":")[0].strip() for p in env.get("QT_QPA_PLATFORM", "").split(";")}
    platforms.discard("")
    if platforms - _X11 - _WAYLAND:
        return None
    wayland, x11 = env.get("WAYLAND_DISPLAY", ""), env.get("DISPLAY", "")
    want_wayland = not platforms or bool(platforms & _WAYLAND)
    want_x11 = not platforms or bool(platforms & _X11)
    if want_wayland and wayland and _wayland_answers(wayland, env):
        return None
    if want_x11 and x11 and _x11_answers(x11):
        return None
    tried = []
    if want_wayland and wayland:
        tried.append(f"WAYLAND_DISPLAY={wayland}")
    if want_x11 and x11:
        tried.append(f"DISPLAY={x11}")
    why = f" ({' and '.join(tried)} did not answer)" if tried else ""
    return (f"no graphical display{why}: use `blankslate run CONTEXT --headless`, "
            "or start it from a desktop session")

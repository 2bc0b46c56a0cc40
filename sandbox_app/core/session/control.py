"""Ask the process that runs a context's session (the app, or a ``blankslate run``) to act
on it: ``blankslate session list`` / ``stop`` / ``suspend``.

Each such process listens on ``RUNTIME/control-PID.sock`` (a unix socket in the 0700
runtime dir: only this user; no TCP). One JSON line in, one JSON line out:

    {"op": "info"}                         → {"sessions": [{"context", "memory_mib",
                                               "changed_bytes", "state"}, ...]}
    {"op": "stop", "context": C, "how": "keep" | "discard" | "suspend"}
                                           → {"ok": true} or {"error": "one line"}
    {"op": "open", "context": C, "url": U} → (the app) starts it or raises its window, and
                                             opens U (optional) in it
    {"op": "show"}                         → (the app) brings up its launcher
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..contexts import Journal, SessionRecord
from ..errors import BlankSlateError
from ..storage import Paths

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
_MAX_LINE = 64 * 1024
HOWS = ("keep", "discard", "suspend")


def control_path(paths: Paths, pid: int | None = None) -> Path:
    return paths.runtime / f"control-{pid or os.getpid()}.sock"


class ControlServer:
    """This process's control socket; ``handler`` answers each request."""

    def __init__(self, paths: Paths, handler: Handler) -> None:
        self.path = control_path(paths)
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._serving: set[asyncio.Task[Any]] = set()

    async def start(self) -> ControlServer:
        self.path.unlink(missing_ok=True)
        old = os.umask(0o177)  # the socket itself 0600, in a 0700 dir
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                           limit=_MAX_LINE)
        finally:
            os.umask(old)
        return self

    async def close(self) -> None:
        """Stop listening; requests in flight get their answer first (up to 10 s)."""
        if self._server is not None:
            self._server.close()
        if self._serving:
            await asyncio.wait(self._serving, timeout=10)
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise TypeError("not an object")
                reply = await self.handler(request)
            except BlankSlateError as exc:
                reply = {"error": str(exc)}
            except (ValueError, TypeError, KeyError) as exc:
                reply = {"error": f"bad request: {exc}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()


def live_sessions(paths: Paths) -> list[SessionRecord]:
    """The sessions running now (not prepared overlays), oldest first."""
    records = [r for r in Journal(paths).records()
               if not r.id.startswith("prep-") and r.runtime_dir and r.owner_alive()]
    return sorted(records, key=lambda r: r.started_at)


async def ask(paths: Paths, pid: int, request: dict[str, Any],
              timeout: float = 300.0) -> dict[str, Any]:
    """Send ``request`` to process ``pid``'s control socket; its reply (BlankSlateError if
    the process does not answer, or answers with an error)."""
    path = control_path(paths, pid)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 5)
    except (TimeoutError, OSError) as exc:
        raise BlankSlateError(f"process {pid} does not answer on {path}: "
                              f"{getattr(exc, 'strerror', None) or 'timed out'}") from None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (TimeoutError, OSError):
        raise BlankSlateError(f"process {pid} did not reply") from None
    finally:
        writer.close()
    try:
        reply = json.loads(line)
    except ValueError:
        raise BlankSlateError(f"process {pid} replied nonsense") from None
    if not isinstance(reply, dict):
        raise BlankSlateError(f"process {pid} replied nonsense")
    if "error" in reply:
        raise BlankSlateError(str(reply["error"]))
    return reply

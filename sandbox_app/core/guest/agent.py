"""Client for the QEMU guest agent (qemu-ga): sync, ping, exec, files, clock.

One idea over 400 lines: one hardened protocol client, its checks kept beside the calls.

The agent speaks JSON, one message a line, over a virtio-serial port. The guest is not
trusted: whatever arrives on that port is judged, never believed. Hence:

- one request at a time (a lock), and every call ends within its timeout with a one-line
  ``GuestError``, whatever the guest sends (garbage, a line without end, nothing at all);
- every call caps the line it waits for at what its answer can legitimately need (a 2 MiB
  read chunk: ~2.7 MiB of base64; a ping: a few bytes); a longer line is dropped as it
  arrives, never buffered whole, and a line that does not carry the call's id, or has more
  JSON containers than any answer needs, is dropped before ``json.loads`` (parsing 16 MiB
  of ``[{},{},…]`` takes ~400 MiB);
- every request carries an id of ours that the agent echoes; answers with another id (late
  answers to requests that timed out, or left over from an earlier client) are dropped;
- ``sync()`` uses ``guest-sync-delimited``: a 0xFF byte first resets the agent's parser
  (it answers with a parse error, which we drop), the agent sends 0xFF before its answer,
  and only the answer carrying our random sync id counts.

qemu-ga cannot kill what ``guest-exec`` started: on timeout we ask the guest to
``kill -KILL`` the pid (best effort, through another guest-exec) and raise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import secrets
import socket
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import GuestError

MAX_LINE = 64 << 20
"""Longest line any call accepts: qemu-ga's own JSON token cap; covers a 16 MiB + 16 MiB exec
output (base64) and any read chunk up to ``MAX_CHUNK``. Each call has its own, smaller cap."""
SMALL_REPLY = 256 << 10
"""The line cap of a call that expects a small answer (ping, open, close, write, info...)."""
MAX_CONTAINERS = 4096
"""More ``{`` and ``[`` than this in one line and it is dropped unparsed: answers have a few."""
_EXEC_REPLY = 2 * ((16 << 20) * 4 // 3) + (64 << 10)  # qemu-ga keeps 16 MiB of each stream
_READ_SIZE = 64 << 10
MAX_CHUNK = 32 << 20
"""Largest ``guest-file-read``/``-write`` chunk (qemu-ga allows 48 MiB reads; base64 must fit
in ``MAX_LINE``)."""
CHUNK = 2 << 20
"""Default chunk. Reading 50 MiB through qemu-ga 7.2 on the host: 512 KiB-4 MiB all gave
13-15 MiB/s (median), 8 MiB 11 MiB/s. qemu-ga, not chunk size, is the bottleneck: it
base64-encodes each answer, then writes it 2 KiB at a time. 2 MiB keeps each request short."""

_SHORT = 5.0  # timeout for bookkeeping requests (ping, file close)
_KILL_TIMEOUT = 2.0  # an exec that timed out may take this much longer, to kill its process


@dataclass(frozen=True)
class ExecResult:
    """What a command run in the guest did.

    ``exit_code`` is the exit status, or ``-signal`` when a signal ended the process (as in
    :mod:`subprocess`). ``truncated`` is set when the agent cut the captured output (it keeps
    at most 16 MiB of each stream).
    """

    exit_code: int
    stdout: bytes
    stderr: bytes
    signal: int | None = None
    truncated: bool = False


class AgentDisconnected(GuestError):
    """The agent's channel closed: QEMU (or the agent's socket) went away."""


def _one_line(text: object, limit: int = 200) -> str:
    """Guest-supplied text made safe for a one-line user-facing message."""
    s = "".join(c if c.isprintable() else " " for c in str(text))
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _b64decode(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise GuestError(f"the guest agent sent malformed {what}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GuestError(f"the guest agent sent malformed {what}") from exc


def _check_chunk(chunk: int) -> None:
    if not 0 < chunk <= MAX_CHUNK:
        raise ValueError(f"chunk must be between 1 and {MAX_CHUNK} bytes, not {chunk}")


class GuestAgent:
    """An asyncio qemu-ga client over a connected stream.

    Build it with :meth:`open_unix` or :meth:`from_socket`. Lines are cut by the client
    itself (each call's cap), so the reader's own buffer limit only bounds read-ahead.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)  # ours, not a previous client's
        self._synced = False
        self._buffer = bytearray()  # the start of the next line
        self._skipping = False  # inside an oversized line: drop up to its end
        self._closed = False

    @classmethod
    async def open_unix(cls, path: Path, *, limit: int = _READ_SIZE) -> GuestAgent:
        """Connect to an agent listening on a unix socket (``qemu-ga -m unix-listen``)."""
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=limit)
        except OSError as exc:
            raise AgentDisconnected(f"cannot connect to the guest agent at {path}: "
                                    f"{exc.strerror or exc}") from exc
        return cls(reader, writer)

    @classmethod
    async def from_socket(cls, sock: socket.socket, *, limit: int = _READ_SIZE) -> GuestAgent:
        """Wrap a connected socket (our end of the socketpair QEMU holds); we own it now."""
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=limit)
        return cls(reader, writer)

    async def close(self) -> None:
        """Close the connection (idempotent). Requests after this raise GuestError."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            async with asyncio.timeout(_SHORT):
                await self._writer.wait_closed()

    async def __aenter__(self) -> GuestAgent:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # ------------------------------------------------------------------ wire

    async def _send(self, data: bytes) -> None:
        if self._closed:
            raise AgentDisconnected("the guest agent connection is closed")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, ConnectionError, RuntimeError) as exc:
            raise AgentDisconnected("the connection to the guest agent was lost") from exc

    async def _send_request(self, cmd: str, args: dict[str, Any] | None,
                            req_id: str | None = None, *, flush: bool = False) -> None:
        msg: dict[str, Any] = {"execute": cmd}
        if args is not None:
            msg["arguments"] = args
        if req_id is not None:
            msg["id"] = req_id
        await self._send((b"\xff" if flush else b"") + json.dumps(msg).encode() + b"\n")

    async def _read_line(self, limit: int) -> bytes | None:
        """The next line, or None for one longer than ``limit`` (dropped as it arrives:
        at most ``limit`` bytes of it are ever held)."""
        scanned = 0
        while True:
            end = self._buffer.find(b"\n", scanned)
            if end >= 0:
                with memoryview(self._buffer) as view:
                    line = bytes(view[:end + 1])
                del self._buffer[:end + 1]
                if self._skipping:  # the tail of an oversized line
                    self._skipping = False
                    return None
                return line if len(line) <= limit else None
            if self._skipping or len(self._buffer) > limit:
                self._skipping = True
                self._buffer.clear()
            scanned = len(self._buffer)
            try:
                data = await self._reader.read(_READ_SIZE)
            except (OSError, ConnectionError) as exc:
                raise AgentDisconnected("the connection to the guest agent was lost") from exc
            if not data:
                raise AgentDisconnected("the guest agent closed the connection")
            self._buffer += data

    async def _read_message(self, limit: int, marker: bytes) -> dict[str, Any] | None:
        """The next message, or None for a line dropped unparsed (longer than ``limit``,
        without ``marker``, or with too many containers) or not a JSON object."""
        line = await self._read_line(limit)
        if line is None:
            return None
        # 0xFF starts a delimited answer: anything before it is a stale partial message.
        start = line.rfind(b"\xff") + 1
        if line.find(marker, start) < 0 or \
                line.count(b"{", start) + line.count(b"[", start) > MAX_CONTAINERS:
            return None
        line = line[start:]
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            return None
        return msg if isinstance(msg, dict) else None

    async def _sync_locked(self) -> None:
        sync_id = secrets.randbelow(2**31 - 1) + 1
        await self._send_request("guest-sync-delimited", {"id": sync_id}, flush=True)
        while True:
            msg = await self._read_message(SMALL_REPLY, str(sync_id).encode())
            if msg is not None and msg.get("return") == sync_id:
                self._synced = True
                return

    async def _call_locked(self, cmd: str, args: dict[str, Any] | None, max_reply: int) -> Any:
        if not self._synced:
            await self._sync_locked()  # clears whatever a previous client left behind
        req_id = f"{self._id_prefix}-{next(self._ids)}"
        await self._send_request(cmd, args, req_id)
        while True:
            msg = await self._read_message(max_reply, req_id.encode())
            if msg is None or msg.get("id") != req_id:
                continue
            if "error" in msg:
                err = msg["error"]
                desc = err.get("desc", "error") if isinstance(err, dict) else err
                raise GuestError(f"{cmd}: {_one_line(desc)}")
            if "return" not in msg:
                raise GuestError(f"{cmd}: malformed answer from the guest agent")
            return msg["return"]

    # ------------------------------------------------------------------ requests

    async def call(self, cmd: str, args: dict[str, Any] | None = None,
                   timeout: float = 30.0, *, max_reply: int = SMALL_REPLY) -> Any:
        """Send one request and return its ``return`` value.

        Waiting for the lock counts against ``timeout``. An agent-side error, a timeout or a
        broken channel raise GuestError with a one-line message. Lines longer than
        ``max_reply`` bytes are dropped unread (at most ``MAX_LINE``).
        """
        max_reply = min(max_reply, MAX_LINE)
        try:
            async with asyncio.timeout(timeout), self._lock:
                return await self._call_locked(cmd, args, max_reply)
        except TimeoutError:
            raise GuestError(f"the guest agent did not answer {cmd} within {timeout:g} s"
                             ) from None

    async def sync(self, timeout: float = 5.0) -> None:
        """Resynchronise with the agent, discarding any stale answers on the channel."""
        try:
            async with asyncio.timeout(timeout), self._lock:
                await self._sync_locked()
        except TimeoutError:
            raise GuestError(f"the guest agent did not answer within {timeout:g} s") from None

    async def wait_ready(self, timeout: float) -> float:
        """Sync, retrying until the agent answers (the guest may still be booting).

        Returns the seconds waited. A closed channel fails at once (QEMU is gone).
        """
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        attempt = 0.25
        while True:
            left = timeout - (loop.time() - t0)
            if left <= 0:
                raise GuestError(f"the guest agent did not answer within {timeout:g} s")
            try:
                await self.sync(timeout=min(attempt, left))
                return loop.time() - t0
            except AgentDisconnected:
                raise
            except GuestError:
                attempt = min(attempt * 2, 2.0)  # later syncs' answers make earlier stale

    async def wait_until(self, command: str, timeout: float) -> str | None:
        """Run ``command`` (``/bin/sh -c``) every half second until it exits 0.

        Returns None once it did; after ``timeout`` seconds, the end of its last stderr.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            res = await self.shell(command, timeout=60)
            if res.exit_code == 0:
                return None
            if loop.time() > deadline:
                return res.stderr.decode(errors="replace").strip()[-200:]
            await asyncio.sleep(0.5)

    async def ping(self, timeout: float = _SHORT) -> None:
        """Check the agent answers."""
        await self.call("guest-ping", timeout=timeout)

    # ------------------------------------------------------------------ exec

    async def exec(self, argv: list[str], *, input: bytes | None = None,
                   timeout: float = 30.0, env: list[str] | None = None) -> ExecResult:
        """Run ``argv`` in the guest, capturing its output, and wait at most ``timeout``.

        ``env`` (``["NAME=value", ...]``) replaces the agent's environment. On timeout the
        process is sent SIGKILL (best effort: qemu-ga has no kill command) and GuestError
        is raised.
        """
        if not argv:
            raise ValueError("argv must not be empty")
        args: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if input is not None:
            args["input-data"] = base64.b64encode(input).decode()
        if env is not None:
            args["env"] = env
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        what = _one_line(" ".join(argv), 60)
        started = await self.call("guest-exec", args, timeout=timeout)
        pid = started.get("pid") if isinstance(started, dict) else None
        if not isinstance(pid, int):
            raise GuestError("guest-exec: malformed answer from the guest agent")
        delay = 0.002
        while True:
            left = deadline - loop.time()
            try:
                status = await self.call("guest-exec-status", {"pid": pid},
                                         timeout=max(left, 0.001), max_reply=_EXEC_REPLY)
            except AgentDisconnected:
                raise
            except GuestError:
                if loop.time() < deadline:
                    raise
                status = {}  # the status request itself ran out of time
            if isinstance(status, dict) and status.get("exited"):
                return _exec_result(status)
            left = deadline - loop.time()
            if left <= 0:
                await self._kill(pid)
                raise GuestError(f"'{what}' did not finish within {timeout:g} s (killed)")
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.1)

    async def _kill(self, pid: int) -> None:
        with contextlib.suppress(GuestError):
            await self.call("guest-exec", {"path": "/bin/sh", "arg": ["-c", f"kill -KILL {pid}"]},
                            timeout=_KILL_TIMEOUT)

    async def shell(self, command: str, *, input: bytes | None = None,
                    timeout: float = 30.0, env: list[str] | None = None) -> ExecResult:
        """Run ``/bin/sh -c command`` in the guest (see :meth:`exec`)."""
        return await self.exec(["/bin/sh", "-c", command], input=input, timeout=timeout,
                               env=env)

    # ------------------------------------------------------------------ files

    async def open_file(self, path: str, mode: str = "rb", timeout: float = 30.0) -> int:
        """Open a guest file (``fopen`` modes); returns the agent's handle."""
        handle = await self.call("guest-file-open", {"path": path, "mode": mode}, timeout)
        if not isinstance(handle, int):
            raise GuestError("guest-file-open: malformed answer from the guest agent")
        return handle

    async def close_file(self, handle: int, timeout: float = _SHORT) -> None:
        """Close a guest file handle."""
        await self.call("guest-file-close", {"handle": handle}, timeout)

    async def read_chunk(self, handle: int, count: int, timeout: float = 30.0
                         ) -> tuple[bytes, bool]:
        """Read at most ``count`` bytes from an open guest file; returns (data, eof)."""
        r = await self.call("guest-file-read", {"handle": handle, "count": count}, timeout,
                            max_reply=(count + 2) // 3 * 4 + (4 << 10))
        if not isinstance(r, dict):
            raise GuestError("guest-file-read: malformed answer from the guest agent")
        data = _b64decode(r.get("buf-b64"), "file data")
        if len(data) > count:
            raise GuestError("the guest agent sent more file data than asked for")
        # qemu-ga reads with fread: a short read of 0 bytes means end of file.
        return data, bool(r.get("eof")) or not data

    async def write_chunk(self, handle: int, data: bytes, timeout: float = 30.0) -> None:
        """Write ``data`` to an open guest file; a short write is an error."""
        r = await self.call("guest-file-write", {
            "handle": handle, "buf-b64": base64.b64encode(data).decode()}, timeout)
        if not isinstance(r, dict) or r.get("count") != len(data):
            raise GuestError("the guest agent wrote fewer bytes than sent")

    async def read_file_chunks(self, path: str, chunk: int = CHUNK, *,
                               timeout: float = 30.0) -> AsyncGenerator[bytes, None]:
        """Stream a guest file, ``chunk`` bytes a request (``timeout`` per request).

        Use it under ``contextlib.aclosing`` when you may stop early, so the handle is
        closed at once.
        """
        _check_chunk(chunk)
        handle = await self.open_file(path, "rb", timeout)
        try:
            eof = False
            while not eof:
                data, eof = await self.read_chunk(handle, chunk, timeout)
                if data:
                    yield data
        finally:
            with contextlib.suppress(GuestError):
                await self.close_file(handle)

    async def read_file(self, path: str, *, max_bytes: int | None = None,
                        chunk: int = CHUNK, timeout: float = 30.0) -> bytes:
        """Read a whole guest file; GuestError if it is larger than ``max_bytes``."""
        parts: list[bytes] = []
        size = 0
        async with contextlib.aclosing(self.read_file_chunks(path, chunk,
                                                             timeout=timeout)) as chunks:
            async for data in chunks:
                size += len(data)
                if max_bytes is not None and size > max_bytes:
                    raise GuestError(f"{_one_line(path, 80)} is larger than {max_bytes} bytes")
                parts.append(data)
        return b"".join(parts)

    async def write_file(self, path: str, data: bytes, chunk: int = CHUNK, *,
                         timeout: float = 30.0) -> None:
        """Create or replace a guest file with ``data`` (flushed before it is closed)."""
        _check_chunk(chunk)
        handle = await self.open_file(path, "wb", timeout)
        try:
            view = memoryview(data)
            for off in range(0, len(view), chunk):
                await self.write_chunk(handle, bytes(view[off:off + chunk]), timeout)
            await self.call("guest-file-flush", {"handle": handle}, timeout)
        finally:
            with contextlib.suppress(GuestError):
                await self.close_file(handle)

    # ------------------------------------------------------------------ machine

    async def set_time(self, ns: int | None = None, timeout: float = 10.0) -> None:
        """Set the guest clock to ``ns`` since the epoch (default: the host's clock now)."""
        await self.call("guest-set-time", {"time": time.time_ns() if ns is None else ns},
                        timeout)

    async def shutdown(self, mode: str = "powerdown", timeout: float = _SHORT) -> None:
        """Ask the guest to power down, halt or reboot.

        The agent does not answer this command when it succeeds, so nothing is awaited but
        the send; a refusal arrives later and is dropped like any stale answer.
        """
        if mode not in ("powerdown", "halt", "reboot"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        try:
            async with asyncio.timeout(timeout), self._lock:
                if not self._synced:
                    await self._sync_locked()
                await self._send_request("guest-shutdown", {"mode": mode},
                                         f"{self._id_prefix}-{next(self._ids)}")
        except TimeoutError:
            raise GuestError(f"the guest agent did not answer within {timeout:g} s") from None


def _exec_result(status: dict[str, Any]) -> ExecResult:
    signal = status.get("signal")
    code = status.get("exitcode")
    if isinstance(signal, int) and not isinstance(code, int):
        code = -signal
    if not isinstance(code, int):
        raise GuestError("guest-exec-status: malformed answer from the guest agent")
    return ExecResult(
        exit_code=code,
        stdout=_b64decode(status.get("out-data", ""), "command output"),
        stderr=_b64decode(status.get("err-data", ""), "command output"),
        signal=signal if isinstance(signal, int) else None,
        truncated=bool(status.get("out-truncated") or status.get("err-truncated")),
    )

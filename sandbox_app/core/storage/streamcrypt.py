"""Authenticated encryption of large streams (saved VM RAM states) in constant memory.

File format::

    header  = b"BSENC1\\0\\0" | salt (16 random bytes) | nonce prefix (4 random bytes)
    chunk i = AES-256-GCM(subkey, nonce = prefix || i as 8-byte big-endian,
                          plaintext = up to 1 MiB, aad = header || i || final flag || label)

The subkey is HKDF-SHA256(context key, salt), so every file has its own key and nonces never
repeat across files whatever the counter. Every chunk but the last holds exactly 1 MiB; the
last one carries final = 1 (an empty stream is one empty final chunk). So a reordered, swapped,
dropped, truncated or extended file, or a chunk moved between files, fails to decrypt. The
caller's ``label`` (empty for the first kept states) binds a file to what it is for — a
context's kept state of one generation — so a file put in another's place fails too.

Decryption is streaming: each chunk is verified before it is released, but a truncated file
is only detected at its end, after earlier (authentic) chunks went out. Consumers must treat
the whole stream as failed when decryption raises (QEMU's incoming migration does).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import DiskFullError, ImageError
from ..progress import Progress
from .fsutil import fsync_dir
from .keys import ContextKey
from .wipe import secure_erase

MAGIC = b"BSENC1\0\0"
CHUNK = 1 << 20
TAG = 16
SALT = 16
PREFIX = 4
HEADER = len(MAGIC) + SALT + PREFIX
_INFO = b"blankslate-state-v1"
_PIPE_SIZE = 1 << 20  # the unprivileged maximum; fewer wake-ups per chunk


def _subkey(key: ContextKey, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO)
    return AESGCM(hkdf.derive(key.material()))


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">Q", index)


def _aad(header: bytes, index: int, final: bool, label: bytes = b"") -> bytes:
    return header + struct.pack(">QB", index, final) + label


def _grow_pipe(fd: int) -> None:
    """Best effort: a 1 MiB pipe buffer instead of 64 KiB (no-op for regular files)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)


def _read_full(src: BinaryIO, n: int) -> bytes:
    """Read exactly ``n`` bytes unless EOF comes first (pipes return short reads)."""
    first = src.read(n)
    if not first or len(first) == n:
        return first or b""
    parts = [first]
    n -= len(first)
    while n > 0:
        data = src.read(n)
        if not data:
            break
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class IterReader(io.RawIOBase):
    """A read-only file object over an iterator of byte strings (to encrypt a generator)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = iter(pieces)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._buf = piece
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def encrypt_stream(key: ContextKey, src: BinaryIO | int, dst: Path,
                   progress: Progress | None = None, expected_size: int | None = None, *,
                   label: bytes = b"") -> int:
    """Encrypt everything ``src`` (a binary file object or a readable fd) yields into ``dst``.

    Writes ``dst`` atomically (temp file, fsync, rename, fsync of the directory) and returns
    the bytes written. Progress is the fraction of ``expected_size`` when given, else None.
    On any failure the partial file is securely erased; ENOSPC becomes DiskFullError.
    ``src`` is read to EOF but not closed.
    """
    if isinstance(src, int):
        _grow_pipe(src)
        with os.fdopen(src, "rb", buffering=0, closefd=False) as reader:
            return encrypt_stream(key, reader, dst, progress, expected_size, label=label)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        _grow_pipe(src.fileno())
    tmp = dst.with_name(f".{dst.name}.tmp")
    salt, prefix = os.urandom(SALT), os.urandom(PREFIX)
    header = MAGIC + salt + prefix
    aead = _subkey(key, salt)
    written = done = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            _write_all(fd, header)
            written += len(header)
            index = 0
            pending = _read_full(src, CHUNK)
            while True:
                # Read one chunk ahead: the last chunk must know it is the last.
                following = _read_full(src, CHUNK) if len(pending) == CHUNK else b""
                final = not following
                sealed = aead.encrypt(_nonce(prefix, index), pending,
                                      _aad(header, index, final, label))
                _write_all(fd, sealed)
                written += len(sealed)
                done += len(pending)
                if progress is not None:
                    progress("encrypting saved state",
                             min(done / expected_size, 1.0) if expected_size else None)
                if final:
                    break
                pending, index = following, index + 1
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            secure_erase(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"disk full while saving {dst.name}") from exc
        raise
    return written


def decrypt_chunks(key: ContextKey, src_path: Path, label: bytes = b"") -> Iterator[bytes]:
    """Yield the plaintext of ``src_path`` chunk by chunk, each verified before it is yielded.

    ImageError if the file is corrupt, truncated, tampered with or under another key.
    """
    corrupt = ImageError(f"saved state {src_path.name} is corrupt or was tampered with "
                         "(or belongs to another context key)")
    with open(src_path, "rb", buffering=0) as src:
        header = _read_full(src, HEADER)
        if len(header) != HEADER or not header.startswith(MAGIC):
            raise corrupt
        salt, prefix = header[len(MAGIC):len(MAGIC) + SALT], header[-PREFIX:]
        aead = _subkey(key, salt)
        index = 0
        sealed = _read_full(src, CHUNK + TAG)
        while True:
            following = (_read_full(src, CHUNK + TAG)
                         if len(sealed) == CHUNK + TAG else b"")
            final = not following
            try:
                plain = aead.decrypt(_nonce(prefix, index), sealed,
                                     _aad(header, index, final, label))
            except InvalidTag:
                raise corrupt from None
            yield plain
            if final:
                return
            sealed, index = following, index + 1


def decrypt_to_fd(key: ContextKey, src_path: Path, dst_fd: int,
                  progress: Progress | None = None, *, label: bytes = b"") -> int:
    """Decrypt ``src_path`` into ``dst_fd`` (e.g. the pipe behind QEMU's ``-incoming fd:N``).

    Returns the plaintext bytes written. Does not close ``dst_fd``. If this raises, what was
    already written must be thrown away (see the module docstring).
    """
    _grow_pipe(dst_fd)
    total_in = max(src_path.stat().st_size, 1)
    total = 0
    for index, chunk in enumerate(decrypt_chunks(key, src_path, label)):
        _write_all(dst_fd, chunk)
        total += len(chunk)
        if progress is not None:
            progress("decrypting saved state",
                     min((HEADER + (index + 1) * (CHUNK + TAG)) / total_in, 1.0))
    return total


"""Chunked AES-256-GCM for saved RAM states: roundtrip, tamper detection, pipes, disk full."""

from __future__ import annotations

import errno
import io
import os
import threading
from pathlib import Path

import pytest

from sandbox_app.core.errors import DiskFullError, ImageError
from sandbox_app.core.storage import ContextKey, decrypt_to_fd, encrypt_stream, streamcrypt
from sandbox_app.core.storage.streamcrypt import CHUNK, HEADER, TAG, decrypt_chunks

SEALED = CHUNK + TAG


def _decrypt(key: ContextKey, path: Path) -> bytes:
    return b"".join(decrypt_chunks(key, path))


@pytest.mark.parametrize("size", [0, 1, CHUNK, 5 * CHUNK + CHUNK // 2])
def test_roundtrip(tmp_path: Path, size: int) -> None:
    key = ContextKey()
    data = os.urandom(size)
    written = encrypt_stream(key, io.BytesIO(data), tmp_path / "s.enc")
    chunks = max(1, -(-size // CHUNK))
    assert written == (tmp_path / "s.enc").stat().st_size == HEADER + size + chunks * TAG
    assert _decrypt(key, tmp_path / "s.enc") == data
    if size >= 32:
        assert data[:32] not in (tmp_path / "s.enc").read_bytes()


def test_same_plaintext_encrypts_differently_each_time(tmp_path: Path) -> None:
    key = ContextKey()
    encrypt_stream(key, io.BytesIO(b"same"), tmp_path / "a")
    encrypt_stream(key, io.BytesIO(b"same"), tmp_path / "b")
    assert (tmp_path / "a").read_bytes() != (tmp_path / "b").read_bytes()


def test_encrypt_from_a_pipe_fd_with_progress(tmp_path: Path) -> None:
    key = ContextKey()
    data = os.urandom(3 * CHUNK + 5)
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    seen: list[float | None] = []
    encrypt_stream(key, r, tmp_path / "s.enc", lambda _p, f: seen.append(f),
                   expected_size=len(data))
    writer.join()
    os.close(r)
    assert _decrypt(key, tmp_path / "s.enc") == data
    assert len(seen) == 4 and seen[-1] == 1.0
    assert (tmp_path / "s.enc").stat().st_mode & 0o777 == 0o600


def _tamper(path: Path, how: str) -> None:
    blob = bytearray(path.read_bytes())
    h = HEADER
    if how == "truncate-at-chunk":
        del blob[h + 2 * SEALED:]
    elif how == "truncate-mid-chunk":
        del blob[-100:]
    elif how == "drop-middle-chunk":
        del blob[h + SEALED:h + 2 * SEALED]
    elif how == "flip-ciphertext":
        blob[len(blob) // 2] ^= 1
    elif how == "flip-header":
        blob[10] ^= 1
    elif how == "swap-chunks":
        a, b = blob[h:h + SEALED], blob[h + SEALED:h + 2 * SEALED]
        blob[h:h + 2 * SEALED] = b + a
    elif how == "extend":
        blob += blob[h:h + SEALED]
    elif how == "bad-magic":
        blob[:6] = b"XXXXXX"
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("how", ["truncate-at-chunk", "truncate-mid-chunk", "drop-middle-chunk",
                                 "flip-ciphertext", "flip-header", "swap-chunks", "extend",
                                 "bad-magic"])
def test_tampering_is_detected(tmp_path: Path, how: str) -> None:
    key = ContextKey()
    encrypt_stream(key, io.BytesIO(os.urandom(3 * CHUNK + 1000)), tmp_path / "s.enc")
    _tamper(tmp_path / "s.enc", how)
    with pytest.raises(ImageError, match="corrupt or was tampered with"):
        _decrypt(key, tmp_path / "s.enc")


def test_chunk_from_another_file_is_detected(tmp_path: Path) -> None:
    key = ContextKey()
    for name in ("a", "b"):
        encrypt_stream(key, io.BytesIO(bytes(2 * CHUNK)), tmp_path / name)
    a, b = (tmp_path / "a").read_bytes(), (tmp_path / "b").read_bytes()
    (tmp_path / "a").write_bytes(a[:HEADER + SEALED] + b[HEADER + SEALED:])
    with pytest.raises(ImageError):
        _decrypt(key, tmp_path / "a")


def test_wrong_key_fails(tmp_path: Path) -> None:
    encrypt_stream(ContextKey(), io.BytesIO(b"hello"), tmp_path / "s.enc")
    with pytest.raises(ImageError):
        _decrypt(ContextKey(), tmp_path / "s.enc")


def test_decrypt_into_a_pipe_read_by_another_thread(tmp_path: Path) -> None:
    key = ContextKey()
    data = os.urandom(2 * CHUNK + 7)
    encrypt_stream(key, io.BytesIO(data), tmp_path / "s.enc")
    r, w = os.pipe()
    got: list[bytes] = []

    def read_all() -> None:
        with os.fdopen(r, "rb") as f:
            got.append(f.read())

    reader = threading.Thread(target=read_all)
    reader.start()
    seen: list[float | None] = []
    assert decrypt_to_fd(key, tmp_path / "s.enc", w, lambda _p, f: seen.append(f)) == len(data)
    os.close(w)
    reader.join()
    assert got[0] == data
    assert seen[-1] == 1.0


def test_disk_full_removes_the_partial_file_and_keeps_the_old_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = ContextKey()
    dst = tmp_path / "s.enc"
    encrypt_stream(key, io.BytesIO(b"previous state"), dst)
    real_write_all = streamcrypt._write_all
    calls = []

    def write_then_fill(fd: int, data: bytes) -> None:
        calls.append(len(data))
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, data)

    monkeypatch.setattr(streamcrypt, "_write_all", write_then_fill)
    with pytest.raises(DiskFullError, match="disk full"):
        encrypt_stream(key, io.BytesIO(bytes(4 * CHUNK)), dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.enc"]
    assert _decrypt(key, dst) == b"previous state"


def test_failing_source_leaves_nothing_behind(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError(errno.EIO, "I/O error")
            return bytes(n)

    with pytest.raises(OSError, match="I/O error"):
        encrypt_stream(ContextKey(), Broken(), tmp_path / "s.enc")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []

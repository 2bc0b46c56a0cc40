"""A context's unlocked key and what it protects: layer keys and saved RAM states.

Each disk layer has its own random LUKS key (the key of the session that wrote it). Keeping
a session does not re-encrypt anything: the session's key is wrapped (AES-256-GCM) with the
context key and stored in the context manifest next to the layer's file name, which is bound
in as associated data so a wrapped key cannot be moved to another layer. Saved RAM states are
encrypted with the context key by ``streamcrypt``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import AuthError, ImageError
from ..storage import (
    ContextKey,
    IterReader,
    KeyStore,
    Paths,
    decrypt_chunks,
    decrypt_to_fd,
    encrypt_stream,
    private_dir,
)
from .context import Context

FdConsumer = Callable[[int], Awaitable[None]]


def key_store(paths: Paths) -> KeyStore:
    """The store of per-context keys (wrapped by passphrase, keyring or 0600 file)."""
    use_keyring = os.environ.get("BLANKSLATE_KEYRING", "auto") != "off"
    return KeyStore(private_dir(paths.data / "keys"), use_keyring=use_keyring)


class Vault:
    """The unlocked key of one context."""

    def __init__(self, context: Context, key: ContextKey) -> None:
        self.context = context
        self._key = key
        self.warning: str | None = None  # e.g. "key stored in a 0600 file", for the user

    @classmethod
    def open(cls, paths: Paths, context: Context, passphrase: str | None) -> Vault:
        """Unlock (or, the first time, create) the context's key."""
        store = key_store(paths)
        if store.exists(context.name):
            key = store.unlock(context.name, passphrase)
        else:
            key = store.create(context.name, passphrase)
        vault = cls(context, key)
        vault.warning = store.last_warning
        return vault

    def _aad(self, file_name: str) -> bytes:
        return f"blankslate-layer-key\0{self.context.name}\0{file_name}".encode()

    def wrap(self, file_name: str, secret: bytes) -> str:
        nonce = os.urandom(12)
        ct = AESGCM(self._key.material()).encrypt(nonce, secret, self._aad(file_name))
        return base64.b64encode(nonce + ct).decode()

    def unwrap(self, file_name: str, token: str) -> bytes:
        try:
            raw = base64.b64decode(token)
            return AESGCM(self._key.material()).decrypt(raw[:12], raw[12:],
                                                        self._aad(file_name))
        except (ValueError, InvalidTag) as exc:
            raise AuthError(
                f"context '{self.context.name}': layer key does not match the context key"
            ) from exc

    def save(self, pieces: Iterable[bytes], dst: Path, *, label: bytes) -> int:
        """Encrypt what ``pieces`` yields (a RAM delta, a device state) into ``dst``, bound to
        ``label``; returns the bytes written."""
        return encrypt_stream(self._key, io.BufferedReader(IterReader(pieces)), dst, label=label)

    def load(self, src: Path, *, label: bytes) -> Iterator[bytes]:
        """The plaintext of a file written by ``save``, chunk by chunk, each verified."""
        if not src.exists():
            raise ImageError(f"saved state of context '{self.context.name}' is missing "
                             f"({src.name})")
        return decrypt_chunks(self._key, src, label)

    async def save_state(self, machine_save: FdConsumer, dst: Path, *,
                         label: bytes = b"") -> int:
        """Encrypt a migration stream that QEMU writes into a pipe; returns bytes written.

        ``machine_save`` is a coroutine function taking the pipe's write fd.
        """
        r, w = os.pipe()
        result: list[int] = []
        errors: list[BaseException] = []

        def pump() -> None:
            try:
                with os.fdopen(r, "rb", buffering=0) as src:
                    result.append(encrypt_stream(self._key, src, dst, label=label))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=pump, name="encrypt-state", daemon=True)
        thread.start()
        try:
            await machine_save(w)
        except BaseException:
            os.close(w)
            await asyncio.to_thread(thread.join)
            if errors:  # the writer's failure (e.g. disk full) is the real cause
                raise errors[0] from None
            raise
        os.close(w)  # QEMU holds its own copy; EOF reaches the reader when it closes it
        await asyncio.to_thread(thread.join)
        if errors:
            raise errors[0]
        return result[0]

    async def restore_state(self, machine_restore: FdConsumer, src: Path, *,
                            label: bytes = b"",
                            unpack: Callable[[Iterator[bytes]], bytes] | None = None) -> None:
        """Decrypt a saved state into a pipe that QEMU reads as its incoming migration
        (through ``unpack`` first when given: a state stored packed, see ``vm.guestram``)."""
        if not src.exists():
            raise ImageError(f"saved state of context '{self.context.name}' is missing")
        r, w = os.pipe()
        errors: list[BaseException] = []

        def pump() -> None:
            try:
                if unpack is None:
                    decrypt_to_fd(self._key, src, w, label=label)
                else:
                    view = memoryview(unpack(decrypt_chunks(self._key, src, label)))
                    while view:
                        view = view[os.write(w, view):]
            except BaseException as exc:
                errors.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    os.close(w)

        thread = threading.Thread(target=pump, name="decrypt-state", daemon=True)
        thread.start()
        try:
            await machine_restore(r)
        except BaseException:
            if errors:
                raise errors[0] from None
            raise
        finally:
            os.close(r)
            await asyncio.to_thread(thread.join)
        if errors:
            raise errors[0]

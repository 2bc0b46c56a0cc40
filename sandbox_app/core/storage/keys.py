"""Keys: per-session keys (memory only) and per-context keys (wrapped at rest).

A session key protects one session's LUKS overlay. It lives only in this process and in
QEMU (handed over through an inherited pipe), and is dropped on discard: crypto-erase.

A context key (32 random bytes) protects a context's kept layers and saved RAM state. It is
stored in ``<directory>/<context>.key.json`` (0600), which records how:
- ``passphrase``: wrapped by AES-256-GCM under a key derived from the passphrase with scrypt
  (salt, scrypt parameters and nonce in the file; the context name is associated data);
- ``keyring``: the key is in the OS keyring (Secret Service, KWallet, macOS Keychain…);
- ``file``: no passphrase and no usable keyring, so the key is in the file itself; anyone who
  can read your files can read it. ``KeyStore.last_warning`` says so; the caller shows it.

Dropping a key zeroes the bytearray that holds it. That is best effort: CPython copies bytes
around (``material()`` returns a copy, cryptography and base64 make more) and we cannot reach
those copies; they are freed, not wiped. What we do control: keys never reach disk in the clear
when a passphrase or keyring is used, nor argv, the environment, logs or ``repr``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import uuid
from enum import Enum
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import AuthError, BlankSlateError, NotFoundError, UsageError
from .fsutil import atomic_write_json
from .paths import validate_name
from .wipe import overwrite_open_file, secure_erase

log = logging.getLogger(__name__)

KEY_BYTES = 32
# OWASP's recommended minimum for scrypt: 128 MiB of memory, ~0.7 s on the 2-core test VM,
# ~0.3 s on a current laptop. Paid once per unlock; the wrapped key itself is random.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
_KEYRING_SERVICE = "blankslate"


_VERSIONS = (1, 2)  # key file versions this code reads; it writes the last


class _Key:
    """KEY_BYTES random bytes in a mutable buffer that ``drop()`` zeroes; never shown."""

    __slots__ = ("_buf", "_dropped")

    def __init__(self, material: bytes | bytearray | None = None) -> None:
        self._buf = bytearray(os.urandom(KEY_BYTES) if material is None else material)
        if len(self._buf) != KEY_BYTES:
            raise ValueError(f"a key is {KEY_BYTES} bytes")
        self._dropped = False

    def material(self) -> bytes:
        """The raw key (a copy: see the module docstring about what drop() can reach)."""
        if self._dropped:
            raise BlankSlateError("internal error: key used after it was dropped")
        return bytes(self._buf)

    def drop(self) -> None:
        """Overwrite the key in memory (best effort). Using it afterwards is an error."""
        self._buf[:] = bytes(len(self._buf))  # same length: overwrites in place
        self._dropped = True

    @property
    def dropped(self) -> bool:
        return self._dropped

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.drop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}{' dropped' if self._dropped else ''}>"

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} must not be pickled")


class SessionKey(_Key):
    """The random key of one session's LUKS overlay (never stored)."""

    __slots__ = ()

    def secret_text(self) -> bytes:
        """The passphrase QEMU's LUKS driver gets (it must be text): base64 of the key."""
        return base64.b64encode(self.material())


class ContextKey(_Key):
    """The key protecting one context's layers and saved states."""

    __slots__ = ()


class KeyStorage(Enum):
    """Where a context key is kept at rest."""

    PASSPHRASE = "passphrase"  # noqa: S105  (a storage kind, not a password)
    KEYRING = "keyring"
    FILE = "file"


class KeyStore:
    """Per-context keys in ``directory/<context>.key.json`` (0600), maybe with the keyring.

    ``use_keyring=False`` never touches the OS keyring (tests, ``BLANKSLATE_KEYRING=off``).
    ``keyring_backend`` injects a keyring-like object (get/set/delete_password) instead of
    the system's. ``last_warning`` is set by the last create/change when the key ended up
    stored in the clear, and is None otherwise.
    """

    def __init__(self, directory: Path, use_keyring: bool = True, *,
                 keyring_backend: Any = None, scrypt_n: int = SCRYPT_N) -> None:
        self.directory = directory
        self.use_keyring = use_keyring
        self._injected_backend = keyring_backend
        self._scrypt = {"n": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P}
        self.last_warning: str | None = None

    # ------------------------------------------------------------------ public

    def exists(self, context: str) -> bool:
        return self._path(context).exists()

    def storage(self, context: str) -> KeyStorage:
        """How the context's key is stored; NotFoundError if it has none."""
        return self._storage_of(context, self._load(context))

    def is_protected(self, context: str) -> bool:
        """True if unlocking the context needs its passphrase."""
        return self.exists(context) and self.storage(context) is KeyStorage.PASSPHRASE

    def create(self, context: str, passphrase: str | None,
               key: ContextKey | None = None) -> ContextKey:
        """Generate (or, given ``key``, take: a renamed context keeps its key) and store a
        key for ``context``; refuses to replace an existing one."""
        if self.exists(context):
            raise UsageError(f"context '{context}' already has a key")
        key = key if key is not None else ContextKey()
        self._store(context, key, passphrase)
        return key

    def unlock(self, context: str, passphrase: str | None) -> ContextKey:
        """The context's key; AuthError on a wrong or missing passphrase."""
        rec = self._load(context)
        storage = self._storage_of(context, rec)
        if storage is KeyStorage.PASSPHRASE:
            if not passphrase:
                raise AuthError(f"context '{context}' is locked: its passphrase is needed")
            try:
                params = self._checked_params(rec["scrypt"])
                salt, nonce, wrapped = (base64.b64decode(rec[k], validate=True)
                                        for k in ("salt", "nonce", "wrapped"))
            except (KeyError, TypeError, ValueError):
                raise self._corrupt(context) from None
            kek = _derive(passphrase, salt, params)
            try:
                raw = AESGCM(kek).decrypt(nonce, wrapped, context.encode())
            except InvalidTag:
                raise AuthError(f"wrong passphrase for context '{context}'") from None
            return ContextKey(raw)
        if storage is KeyStorage.KEYRING:
            secret = self._keyring_get(context, self._account(context, rec))
            if secret is None:
                raise AuthError(f"the key of context '{context}' is missing from the keyring")
            return self._decode_key(context, secret)
        return self._decode_key(context, rec.get("key"))

    def change_passphrase(self, context: str, old: str | None, new: str | None) -> None:
        """Re-wrap the same key under ``new`` (None: keyring or file). Wrong ``old``:
        AuthError and nothing changes."""
        key = self.unlock(context, old)
        try:
            self._store(context, key, new)
        finally:
            key.drop()

    def remove(self, context: str) -> None:
        """Forget the context's key: keyring entry deleted, key file securely erased."""
        with contextlib.suppress(BlankSlateError):
            rec = self._load(context)
            if self._storage_of(context, rec) is KeyStorage.KEYRING:
                self._keyring_delete(self._account(context, rec))
        secure_erase(self._tmp_path(context))
        secure_erase(self._path(context))

    def portable(self, context: str) -> dict[str, Any]:
        """What another machine needs to open ``context``'s data, for an encrypted backup:
        the key file's record when a passphrase wraps the key (it stays wrapped, and the
        passphrase opens it there too), else the key itself (keyring or file storage).
        The caller must never write this anywhere but inside its own encryption."""
        rec = self._load(context)
        if self._storage_of(context, rec) is KeyStorage.PASSPHRASE:
            return {"wrapped": {k: v for k, v in rec.items() if k != "id"}}
        key = self.unlock(context, None)
        try:
            return {"key": _b64(key.material())}
        finally:
            key.drop()

    def adopt(self, context: str, portable: dict[str, Any]) -> None:
        """Store a key that ``portable`` (from another machine) gives as ``context``'s:
        a passphrase-wrapped record as it is, a bare key in the keyring or a 0600 file
        (``last_warning`` says which). Refuses to replace an existing key."""
        if self.exists(context):
            raise UsageError(f"context '{context}' already has a key")
        self.last_warning = None
        if "wrapped" in portable:
            rec = dict(portable["wrapped"])
            if rec.get("context") != context or rec.get("storage") != "passphrase":
                raise UsageError(f"the key of context '{rec.get('context')}' is wrapped by its "
                                 f"passphrase for that name: restore it under its own name")
            rec["id"] = uuid.uuid4().hex
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._replace(context, rec)
            return
        key = self._decode_key(context, portable.get("key"))
        try:
            self._store(context, key, None)
        finally:
            key.drop()

    # ------------------------------------------------------------------ files

    def _path(self, context: str) -> Path:
        return self.directory / f"{validate_name(context, 'context name')}.key.json"

    def _tmp_path(self, context: str) -> Path:
        path = self._path(context)
        return path.with_name(f".{path.name}.tmp")  # the name fsutil.atomic_write uses

    @staticmethod
    def _corrupt(context: str) -> BlankSlateError:
        return BlankSlateError(f"the key file of context '{context}' is corrupt")

    def _load(self, context: str) -> dict[str, Any]:
        try:
            data = json.loads(self._path(context).read_bytes())
        except FileNotFoundError:
            raise NotFoundError(f"context '{context}' has no key") from None
        except (OSError, ValueError) as exc:
            raise self._corrupt(context) from exc
        if not isinstance(data, dict):
            raise self._corrupt(context)
        if data.get("version") not in _VERSIONS:
            raise BlankSlateError(f"the key file of context '{context}' has version "
                                  f"{data.get('version')!r}, which this Blank Slate cannot read "
                                  f"(it reads {', '.join(map(str, _VERSIONS))})")
        return data

    @staticmethod
    def _account(context: str, rec: dict[str, Any]) -> str:
        """The key's keyring entry: unique to this key file (two data directories with a
        context of the same name never share one). Version 1 files used the bare name."""
        key_id = rec.get("id")
        return f"{context}:{key_id}" if isinstance(key_id, str) and key_id else context

    def _storage_of(self, context: str, rec: dict[str, Any]) -> KeyStorage:
        try:
            return KeyStorage(rec.get("storage"))
        except ValueError:
            raise self._corrupt(context) from None

    def _decode_key(self, context: str, text: Any) -> ContextKey:
        try:
            return ContextKey(base64.b64decode(text, validate=True))
        except (TypeError, ValueError):
            raise self._corrupt(context) from None

    def _checked_params(self, params: Any) -> dict[str, int]:
        """scrypt parameters from the file, bounded so a tampered file cannot eat all RAM."""
        n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
        if not (2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError("scrypt parameters out of range")
        return {"n": n, "r": r, "p": p}

    def _store(self, context: str, key: ContextKey, passphrase: str | None) -> None:
        self.last_warning = None
        old = self._load(context) if self.exists(context) else None
        previous = self._storage_of(context, old) if old is not None else None
        rec: dict[str, Any] = {"version": 2, "context": context, "id": uuid.uuid4().hex}
        if passphrase:
            salt, nonce = os.urandom(16), os.urandom(12)
            kek = _derive(passphrase, salt, self._scrypt)
            wrapped = AESGCM(kek).encrypt(nonce, key.material(), context.encode())
            rec |= {"storage": KeyStorage.PASSPHRASE.value, "cipher": "aes-256-gcm",
                    "scrypt": self._scrypt, "salt": _b64(salt), "nonce": _b64(nonce),
                    "wrapped": _b64(wrapped)}
        elif self._keyring_set(self._account(context, rec), _b64(key.material())):
            rec |= {"storage": KeyStorage.KEYRING.value}
        else:
            self.last_warning = (
                f"no passphrase and no usable OS keyring: the key of context '{context}' is "
                f"stored unprotected in a 0600 file ({self._path(context)})")
            log.info("%s", self.last_warning)
            rec |= {"storage": KeyStorage.FILE.value, "key": _b64(key.material())}
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._replace(context, rec)
        if previous is KeyStorage.KEYRING and old is not None:  # the new one has a new id
            self._keyring_delete(self._account(context, old))

    def _replace(self, context: str, rec: dict[str, Any]) -> None:
        """Write the key file atomically, then zero the blocks of the one it replaced.

        The old file may hold the key in the clear, or wrapped under a passphrase that is
        being changed because it leaked. We hold it open across the rename so that a crash at
        any point leaves a complete old or new key file, never none.
        """
        path = self._path(context)
        secure_erase(self._tmp_path(context))  # leftover of a crash: may hold a clear key
        try:
            old_fd: int | None = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            old_fd = None
        try:
            atomic_write_json(path, rec)
            if old_fd is not None:
                overwrite_open_file(old_fd, label=path.name)
        finally:
            if old_fd is not None:
                os.close(old_fd)

    # ------------------------------------------------------------------ keyring

    def _backend(self) -> Any:
        if self._injected_backend is not None:
            return self._injected_backend
        return secret_keyring() if self.use_keyring else None

    def _keyring_set(self, account: str, secret: str) -> bool:
        backend = self._backend()
        if backend is None:
            return False
        try:
            backend.set_password(_KEYRING_SERVICE, account, secret)
        except Exception as exc:
            log.info("keyring refused the key %r: %s", account, type(exc).__name__)
            return False
        return True

    def _keyring_get(self, context: str, account: str) -> str | None:
        backend = self._backend()
        if backend is None:
            raise AuthError(f"the key of context '{context}' is in the OS keyring, which is "
                            "not available now")
        try:
            secret: str | None = backend.get_password(_KEYRING_SERVICE, account)
        except Exception as exc:
            raise AuthError(f"could not read the key of context '{context}' from the OS "
                            f"keyring ({type(exc).__name__})") from None
        return secret

    def _keyring_delete(self, account: str) -> None:
        backend = self._backend()
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.delete_password(_KEYRING_SERVICE, account)


def secret_keyring() -> Any:
    """The OS keyring backend that really protects secrets, or None: not the fail/null
    backend, not keyrings.alt's plain files, priority ≥ 1 (a chainer is looked into)."""
    try:
        import keyring  # noqa: PLC0415  (only when a keyring is wanted)

        backend = keyring.get_keyring()
    except Exception:
        return None
    candidates = list(getattr(backend, "backends", None) or [backend])  # unwrap chainer
    return next((b for b in candidates if _real_keyring(b)), None)


def _real_keyring(backend: Any) -> bool:
    """A keyring that really protects secrets: not fail/null, not keyrings.alt's files."""
    module = type(backend).__module__
    if module.startswith(("keyring.backends.fail", "keyring.backends.null", "keyrings.alt")):
        return False
    try:
        return float(backend.priority) >= 1
    except Exception:
        return False


def _derive(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    try:
        return Scrypt(salt=salt, length=32, **params).derive(passphrase.encode())
    except MemoryError as exc:
        raise BlankSlateError("not enough memory to derive the key from the passphrase") \
            from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


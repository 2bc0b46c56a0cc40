"""A backup repository on a target: keys, content-addressed chunks and snapshot indexes.

Objects on the target::

    config               KDF parameters and the repository keys, wrapped by the passphrase
    data/<ab>/<id>       one chunk: nonce | AES-256-GCM(data key, packed chunk, aad = id)
    snapshots/<random>   one snapshot index: nonce | AES-256-GCM(data key, JSON, aad = name)

A chunk's ``id`` is BLAKE2b keyed with the repository's id key (a keyed hash: without the
key nobody can test whether a backup holds some known content), so equal chunks are stored
once, across contexts and backups. Everything but ``config``'s KDF parameters is ciphertext:
the target sees opaque names and sizes. The repository keys are random; the passphrase
(scrypt) only wraps them, so a passphrase change would be one small object.

A packed chunk (version 2) is a flag byte then the chunk: ``RAW`` as it is, or ``ZLIB``
compressed — when a few sample pages of it compress (random data, such as the LUKS-encrypted
layers, is sent as it is: deflate would cost more CPU than it saves). Compressing before
encrypting tells the target how compressible each chunk is, nothing more: it already sees
each chunk's size. Version 1 repositories (chunks not packed) are read and written as before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import zlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import AuthError
from .target import BackupError, MissingObject, Target

CONFIG = "config"
SNAPSHOTS = "snapshots/"
DATA = "data/"
FORMAT = "blankslate-backup"
VERSION = 2  # 2: chunks packed (see the module docstring)
READABLE = (1, 2)
RAW, ZLIB = 0, 1
_SAMPLE = 4096
_LEVEL = 1  # zlib's fastest: zero-filled regions and headers are most of what compresses
MAX_PLAIN = 64 << 20  # no chunk inflates beyond this (they are at most a few MiB)
SCRYPT = {"n": 2**17, "r": 8, "p": 1}  # as for context keys: ~0.7 s on the 2-core test VM
NONCE = 12


def chunk_name(object_id: str) -> str:
    return f"{DATA}{object_id[:2]}/{object_id}"


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot index's name on the target and what it says about itself."""

    name: str
    created_at: float
    contexts: tuple[str, ...]
    size: int


class Repository:
    """An unlocked repository: seal/open objects, address chunks, read and write indexes."""

    def __init__(self, target: Target, data_key: bytes, id_key: bytes,
                 version: int = VERSION) -> None:
        self.target = target
        self._aead = AESGCM(data_key)
        self._id_key = id_key
        self._packed = version >= 2

    # ---------------------------------------------------------------- open / create

    @classmethod
    def open(cls, target: Target, passphrase: str) -> Repository:
        """Unlock the repository on ``target``; AuthError on a wrong passphrase."""
        if not target.exists():
            raise BackupError(f"no backup at {target.description}")
        try:
            raw = target.get(CONFIG)
        except MissingObject:
            raise BackupError(f"no backup at {target.description}") from None
        try:
            cfg = json.loads(raw)
            if cfg.get("format") != FORMAT or cfg.get("version") not in READABLE:
                raise ValueError("not a Blank Slate backup of a version this code reads")
            kdf = cfg["kdf"]
            n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
            if not (2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
                raise ValueError("KDF parameters out of range")
            salt = base64.b64decode(kdf["salt"], validate=True)
            wrapped = base64.b64decode(cfg["keys"], validate=True)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"{target.description}: the backup's config is corrupt "
                              f"({str(exc)[:80]})") from None
        kek = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())
        try:
            keys = AESGCM(kek).decrypt(wrapped[:NONCE], wrapped[NONCE:], b"blankslate-backup-keys")
        except InvalidTag:
            raise AuthError(f"wrong backup passphrase for {target.description}") from None
        return cls(target, keys[:32], keys[32:64], int(cfg["version"]))

    @classmethod
    def create(cls, target: Target, passphrase: str, scrypt: dict[str, int] = SCRYPT,
               ) -> Repository:
        """A new repository with random keys wrapped by ``passphrase``."""
        if not passphrase:
            raise BackupError("a backup needs a passphrase")
        target.ensure()
        if Repository.initialized(target):  # never replace the keys of an existing backup
            raise BackupError(f"{target.description} already holds a backup")
        salt, nonce = os.urandom(16), os.urandom(NONCE)
        data_key, id_key = os.urandom(32), os.urandom(32)
        kek = Scrypt(salt=salt, length=32, **scrypt).derive(passphrase.encode())
        wrapped = nonce + AESGCM(kek).encrypt(nonce, data_key + id_key, b"blankslate-backup-keys")
        target.put(CONFIG, json.dumps({
            "format": FORMAT, "version": VERSION,
            "kdf": {"name": "scrypt", **scrypt, "salt": base64.b64encode(salt).decode()},
            "cipher": "aes-256-gcm", "id": "blake2b-256-keyed",
            "keys": base64.b64encode(wrapped).decode(),
        }, indent=1).encode())
        return cls(target, data_key, id_key)

    @staticmethod
    def initialized(target: Target) -> bool:
        return target.exists() and CONFIG in target.list(CONFIG)

    # ---------------------------------------------------------------- chunks

    def chunk_id(self, data: bytes | memoryview) -> str:
        return hashlib.blake2b(data, key=self._id_key, digest_size=32).hexdigest()

    def cdc_seed(self) -> int:
        """The chunker's gear seed: secret, so cut points say nothing about the content."""
        mac = hmac.new(self._id_key, b"blankslate-cdc-seed", hashlib.sha256).digest()
        return int.from_bytes(mac[:4], "big") or 1

    def seal_chunk(self, object_id: str, data: bytes | memoryview) -> bytes:
        nonce = os.urandom(NONCE)
        plain = _pack(bytes(data)) if self._packed else bytes(data)
        return nonce + self._aead.encrypt(nonce, plain, b"chunk\0" + object_id.encode())

    def open_chunk(self, object_id: str, blob: bytes, *, rehash: bool = True) -> bytes:
        """The plaintext of chunk ``object_id``, verified (BackupError if it is not): its
        AES-GCM tag, which binds it to its id, and — with ``rehash`` (``backup check``) —
        its keyed hash too, a check of the writer itself; a restore relies on the tag."""
        try:
            plain = self._aead.decrypt(blob[:NONCE], blob[NONCE:],
                                       b"chunk\0" + object_id.encode())
            if self._packed:
                plain = _unpack(plain)
        except (InvalidTag, ValueError, zlib.error):
            raise BackupError(f"object {chunk_name(object_id)} is corrupt") from None
        if rehash and not hmac.compare_digest(self.chunk_id(plain), object_id):
            raise BackupError(f"object {chunk_name(object_id)} is corrupt")
        return plain

    def get_chunk(self, object_id: str) -> bytes:
        return self.open_chunk(object_id, self.target.get(chunk_name(object_id)))

    def known_chunks(self) -> dict[str, int]:
        """Chunk id → stored size, from one listing (so a backup skips what is there)."""
        return {name.rsplit("/", 1)[1]: size
                for name, size in self.target.list(DATA).items()}

    # ---------------------------------------------------------------- snapshots

    def write_snapshot(self, index: dict[str, Any]) -> str:
        """Store a snapshot index (the last object of a backup); returns its name."""
        name = f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}{secrets.token_hex(4)}"
        index = {**index, "name": name}
        nonce = os.urandom(NONCE)
        blob = nonce + self._aead.encrypt(nonce, json.dumps(index).encode(),
                                          b"snapshot\0" + name.encode())
        self.target.put(SNAPSHOTS + name, blob)
        return name

    def read_snapshot(self, name: str) -> dict[str, Any]:
        blob = self.target.get(SNAPSHOTS + name)
        try:
            plain = self._aead.decrypt(blob[:NONCE], blob[NONCE:], b"snapshot\0" + name.encode())
            index: dict[str, Any] = json.loads(plain)
        except (InvalidTag, ValueError):
            raise BackupError(f"snapshot {name} is corrupt") from None
        return index

    def snapshot_names(self) -> list[str]:
        """Oldest first (names start with their UTC time)."""
        return sorted(n[len(SNAPSHOTS):] for n in self.target.list(SNAPSHOTS))

    def snapshots(self) -> list[SnapshotInfo]:
        sizes = self.target.list(SNAPSHOTS)
        out = []
        for name in sorted(n[len(SNAPSHOTS):] for n in sizes):
            index = self.read_snapshot(name)
            out.append(SnapshotInfo(name, float(index.get("created_at", 0.0)),
                                    tuple(sorted(index.get("contexts", {}))),
                                    sizes[SNAPSHOTS + name]))
        return out

    def resolve(self, name: str | None) -> str:
        """A snapshot by (a unique prefix of) its name; the newest when None."""
        names = self.snapshot_names()
        if not names:
            raise BackupError(f"{self.target.description} holds no snapshot yet")
        if name is None:
            return names[-1]
        found = [n for n in names if n.startswith(name)]
        if len(found) != 1:
            raise BackupError(f"no snapshot '{name}' in {self.target.description}" if not found
                              else f"'{name}' names several snapshots: give more of it")
        return found[0]


def _compresses(data: bytes) -> bool:
    """Whether a sample page of ``data`` (its start, middle or end) compresses."""
    for at in (0, len(data) // 2, max(len(data) - _SAMPLE, 0)):
        sample = data[at:at + _SAMPLE]
        if len(zlib.compress(sample, _LEVEL)) < len(sample) * 3 // 4:
            return True
    return False


def _pack(data: bytes) -> bytes:
    if len(data) > 64 and _compresses(data):
        packed = zlib.compress(data, _LEVEL)
        if len(packed) < len(data) - 64:
            return bytes([ZLIB]) + packed
    return bytes([RAW]) + data


def _unpack(plain: bytes) -> bytes:
    """ValueError or zlib.error if ``plain`` is not a packed chunk."""
    if plain[:1] == bytes([RAW]):
        return plain[1:]
    if plain[:1] != bytes([ZLIB]):
        raise ValueError("unknown chunk packing")
    inflate = zlib.decompressobj()
    data = inflate.decompress(plain[1:], MAX_PLAIN)
    if not inflate.eof or inflate.unconsumed_tail:
        raise ValueError("a chunk that does not inflate whole")
    return data

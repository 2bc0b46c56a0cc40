"""Bytes at rest: where files live, atomic writes, secure erase, keys and encrypted streams.

The lowest layer: it knows nothing of QEMU, guests, images or contexts.
"""

from .fsutil import atomic_write_bytes, atomic_write_json, fsync_dir
from .keys import ContextKey, KeyStorage, KeyStore, SessionKey, secret_keyring
from .paths import Paths, private_dir, validate_name
from .streamcrypt import IterReader, decrypt_chunks, decrypt_to_fd, encrypt_stream
from .wipe import erase_tree, secure_erase

__all__ = [
    "ContextKey",
    "IterReader",
    "KeyStorage",
    "KeyStore",
    "Paths",
    "SessionKey",
    "atomic_write_bytes",
    "atomic_write_json",
    "decrypt_chunks",
    "decrypt_to_fd",
    "encrypt_stream",
    "erase_tree",
    "fsync_dir",
    "private_dir",
    "secret_keyring",
    "secure_erase",
    "validate_name",
]

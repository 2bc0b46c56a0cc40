"""Restore under another name (``--as``): what is bound to the old name is bound anew.

A context's layer keys are wrapped with its name as associated data, and its saved states
are encrypted bound to a label holding its name, so a file moved to another context does not
open. Renaming a restored context therefore unwraps and re-wraps each layer key (and the
persistent folder's), and decrypts and re-encrypts its saved states, all with the same
context key.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

from ..contexts import Context, Manifest, Profile, Vault
from ..storage import (
    ContextKey,
    IterReader,
    Paths,
    atomic_write_bytes,
    decrypt_chunks,
    encrypt_stream,
)
from ..storage.keys import KEY_BYTES

_VOLUME, _VOLUME_KEY = "persistent.qcow2", "persistent.key"


def rebind(folder: Path, image: str, old: str, new: str, key_b64: str | None) -> None:
    """Re-bind the context files in ``folder`` from context ``old`` to ``new``."""
    if key_b64 is None:
        return  # never started: nothing is bound to its name yet
    import base64  # noqa: PLC0415

    raw = base64.b64decode(key_b64)
    if len(raw) != KEY_BYTES:
        raise ValueError("bad key length")
    key = ContextKey(raw)
    paths = Paths(folder, folder, folder, folder)  # only the vault's name binding is used
    before = Vault(Context(paths, Profile(name=old, image=image)), key)
    after = Vault(Context(paths, Profile(name=new, image=image)), key)
    for manifest_name in ("current.json", "suspended.json"):
        path = folder / manifest_name
        if not path.exists():
            continue
        m = Manifest.load(path, image)
        layers = tuple(type(e)(e.file, after.wrap(e.file, before.unwrap(e.file, e.key)))
                       for e in m.layers)
        if m.state is not None:
            for f in (m.state.file, m.state.ram):
                if f is None or not (folder / f).exists():
                    continue
                old_label = m.state.label(old, m.generation, m.snapshot, f)
                new_label = m.state.label(new, m.generation, m.snapshot, f)
                tmp = folder / f".{f}.rebind"
                pieces = decrypt_chunks(key, folder / f, old_label)
                encrypt_stream(key, io.BufferedReader(IterReader(pieces)), tmp, label=new_label)
                os.replace(tmp, folder / f)
        dataclasses.replace(m, layers=layers).save(path)
    token_file = folder / _VOLUME_KEY
    if token_file.exists():
        token = token_file.read_text().strip()
        atomic_write_bytes(token_file, after.wrap(_VOLUME, before.unwrap(_VOLUME, token)).encode())

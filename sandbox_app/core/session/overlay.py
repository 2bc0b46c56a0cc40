"""A session's disk: the context's read-only chain, and the encrypted overlay on top of it.

An overlay is prepared ahead of the session that uses it (LUKS formatting takes ~2 s), and
journaled before it exists, so a crash never leaves one behind unnoticed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..contexts import (
    Context,
    Journal,
    Manifest,
    SessionRecord,
    Vault,
    key_store,
    process_start_time,
)
from ..errors import ImageError
from ..images import Image, ImageStore, SnapshotPoint
from ..storage import Paths, SessionKey, private_dir, secure_erase
from ..vm import Layer, allocated_bytes, check_chain, create_overlay, virtual_size


@dataclass
class PreparedOverlay:
    """An encrypted overlay made ahead of time (LUKS formatting takes ~2 s)."""

    path: Path
    key: SessionKey
    backing: Path
    empty_bytes: int
    journal_id: str = ""



async def prepare_overlay(paths: Paths, context: Context, image: Image, point: SnapshotPoint,
                          manifest: Manifest | None = None) -> PreparedOverlay:
    """Create the next session's encrypted overlay on top of the context's current chain
    (or of ``manifest``'s: a suspended session's)."""
    manifest = manifest or context.manifest()
    backing = (context.data_dir / manifest.layers[-1].file if manifest.layers
               else golden_point(image, point, manifest).disk)
    data = private_dir(context.data_dir)
    path = data / f"session-{uuid.uuid4().hex}.qcow2"
    # Journaled before it exists, so a crash never leaves it behind unnoticed.
    journal = Journal(paths)
    rec = SessionRecord(id=f"prep-{path.stem[8:20]}", context=context.name,
                        owner_pid=os.getpid(),
                        owner_start=process_start_time(os.getpid()) or 0,
                        runtime_dir="", files=[str(path)])
    journal.write(rec)
    key = SessionKey()
    try:
        await create_overlay(path, backing, await virtual_size(image.base), key.secret_text())
    except BaseException:
        journal.remove(rec.id)
        raise
    return PreparedOverlay(path, key, backing, allocated_bytes(path), rec.id)


async def discard_prepared(paths: Paths, prepared: PreparedOverlay) -> None:
    """Erase an overlay that was prepared but never used."""
    await asyncio.to_thread(secure_erase, prepared.path)
    prepared.key.drop()
    Journal(paths).remove(prepared.journal_id)


def golden_point(image: Image, point: SnapshotPoint, manifest: Manifest) -> SnapshotPoint:
    """The golden snapshot point a context's layers sit on (an older one after an upgrade)."""
    if manifest.layers and manifest.snapshot and manifest.snapshot != point.directory.name:
        return image.snapshot_dir(manifest.snapshot)
    return point


def read_only_chain(context: Context, image: Image, point: SnapshotPoint, manifest: Manifest,
           vault: Vault | None) -> list[Layer]:
    """Read-only layers under the session overlay, bottom first, with their keys."""
    golden = golden_point(image, point, manifest)
    layers = [Layer(golden.base_files(image.directory)[2]), Layer(golden.disk)]
    for entry in manifest.layers:
        assert vault is not None
        layers.append(Layer(context.data_dir / entry.file, vault.unwrap(entry.file, entry.key)))
    return layers


async def check_context(paths: Paths, context: Context, passphrase: str | None = None) -> int:
    """Verify a context's chain with ``qemu-img check`` and its saved state's presence.

    Returns the number of layers checked; raises ImageError/AuthError on problems.
    """
    manifest = context.manifest()
    store = ImageStore(paths)
    image = store.get(manifest.image)
    vault = None
    if manifest.layers or key_store(paths).is_protected(context.name):
        vault = await asyncio.to_thread(Vault.open, paths, context, passphrase)
    point = image.snapshot_dir(manifest.snapshot) if manifest.snapshot else None
    if point is None:
        return 0
    chain = read_only_chain(context, image, point, manifest, vault)
    await check_chain(chain)
    state = manifest.state
    if state and not all((context.data_dir / f).exists() for f in (state.file, state.ram) if f):
        raise ImageError(f"context '{context.name}': its saved state is missing")
    return len(chain)

"""Keep a context's disk chain short: merge its kept layers into one.

Each keep adds a layer; a long chain costs a little on every read and on every restore. When
a context has more than ``MAX_LAYERS`` layers, the top one is committed into the one below it,
the manifest is switched (atomically) to the shorter chain and the redundant layer is erased;
repeat until one layer is left. The guest sees the same disk at every instant, so the saved
RAM state stays valid and a crash at any point leaves a valid context.
"""

from __future__ import annotations

import asyncio
import dataclasses

from ..images import Image
from ..progress import Progress, no_progress
from ..storage import secure_erase
from ..vm import Layer, commit_top
from .context import Context
from .vault import Vault

MAX_LAYERS = 3


def needs_compaction(context: Context) -> bool:
    return len(context.manifest().layers) > MAX_LAYERS


async def compact(context: Context, image: Image, vault: Vault,
                  progress: Progress = no_progress) -> int:
    """Merge all of the context's layers into its bottom one. Returns bytes erased.

    Must not run while a session of this context runs (its overlay sits on the top layer).
    """
    wiped = 0
    manifest = context.manifest()
    steps = len(manifest.layers) - 1
    for step in range(steps):
        progress(f"{context.name}: compacting disk layers", step / max(steps, 1))
        point = image.snapshot_dir(manifest.snapshot)
        chain = [Layer(point.base_files(image.directory)[2]), Layer(point.disk)] + [
            Layer(context.data_dir / e.file, vault.unwrap(e.file, e.key))
            for e in manifest.layers
        ]
        await commit_top(chain)
        top = manifest.layers[-1]
        manifest = dataclasses.replace(manifest, layers=manifest.layers[:-1])
        manifest.save(context.manifest_path)
        wiped += (await asyncio.to_thread(secure_erase, context.data_dir / top.file)
                  ).wiped_bytes
    progress(f"{context.name}: compacted", 1.0)
    return wiped

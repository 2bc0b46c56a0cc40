"""Image updates: a rebuilt image is a new snapshot point; kept contexts stay on the one
they were kept on (retired, carrying its own base files) until the user moves them
(``reset_context``), and points nobody uses any more are removed (``collect_points``)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

from ..contexts import (
    Context,
    ContextStore,
    Journal,
    Manifest,
    async_context_lock,
    collect_garbage,
)
from ..errors import BlankSlateError, UsageError
from ..images import Image, ImageStore
from ..progress import Progress, no_progress
from ..storage import Paths
from .session import discard_suspended

log = logging.getLogger(__name__)

UPDATE_AFTER_DAYS = 7  # an image older than this has "updates available"


def _running(paths: Paths, names: set[str]) -> bool:
    return any(r.context in names and not r.id.startswith("prep-") and r.owner_alive()
               for r in Journal(paths).records())


def points_in_use(paths: Paths, image: str) -> set[str]:
    """The snapshot points (directory names) kept or suspended contexts of ``image`` sit on."""
    used: set[str] = set()
    contexts, _ = ContextStore(paths).scan()
    for ctx in contexts:
        for manifest in (ctx.manifest(), ctx.suspended()):
            if manifest is not None and manifest.layers and manifest.image == image:
                used.add(manifest.snapshot)
    return used


def collect_points(paths: Paths, image: Image) -> list[str]:
    """Remove the image's retired (or superseded) snapshot points no context uses; not while
    a session of one of its contexts runs (it may sit on one). Returns the names removed."""
    contexts, broken = ContextStore(paths).scan()
    users = {c.name for c in contexts if c.profile.image == image.name}
    if broken or _running(paths, users):
        return []  # a broken manifest may reference any point; a session may sit on one
    used = points_in_use(paths, image.name)
    newest: dict[str, int] = {}
    for point in image.points():
        prefix, _, n = point.directory.name.rpartition("-")
        if not point.retired and n.isdigit():
            newest[prefix] = max(newest.get(prefix, 0), int(n))
    removed = []
    for point in image.points():
        prefix, _, n = point.directory.name.rpartition("-")
        superseded = n.isdigit() and int(n) < newest.get(prefix, 0)
        if point.directory.name not in used and (point.retired or superseded):
            shutil.rmtree(point.directory)
            removed.append(point.directory.name)
    if removed:
        log.info("image %s: removed unused snapshot points %s", image.name, ", ".join(removed))
    return removed


async def update_image(paths: Paths, name: str, progress: Progress = no_progress) -> Image:
    """Build ``name`` again (current Debian packages) and make its new snapshot point;
    running sessions go on, golden contexts use the new point from their next session."""
    store = ImageStore(paths)
    image = await store.build(name, force=True, progress=progress)
    await asyncio.to_thread(collect_points, paths, image)
    return image


def on_old_image(context: Context, image: Image) -> bool:
    """Does the context's kept state sit on an earlier build of its image?"""
    manifest = context.manifest()
    return bool(manifest.layers) and image.snapshot_dir(manifest.snapshot).retired


def image_note(context: Context, image: Image, now: float | None = None) -> str:
    """What the launcher and ``context list`` say about the image a context runs on."""
    if on_old_image(context, image):
        return "kept on an earlier image: updates available (context reset)"
    age_days = ((now or time.time()) - image.built_at) / 86400
    if age_days > UPDATE_AFTER_DAYS:
        return (f"image {int(age_days)} days old: updates available "
                f"(blankslate image update {image.name})")
    return ""


async def reset_context(paths: Paths, name: str) -> int:
    """Start the context fresh on its image's current point: its kept (and suspended)
    session state is securely erased, its persistent folder kept. Returns bytes erased."""
    ctx = ContextStore(paths).get(name)
    if _running(paths, {name}):
        raise UsageError(f"context '{name}' has a running session: stop it first")
    wiped = await discard_suspended(paths, ctx)
    async with async_context_lock(paths, name):
        old = ctx.manifest()
        Manifest(image=ctx.profile.image, generation=old.generation + 1).save(ctx.manifest_path)
        wiped += await asyncio.to_thread(collect_garbage, ctx.data_dir,
                                         Journal(paths).live_files())
    try:
        image = ImageStore(paths).get(ctx.profile.image)
    except BlankSlateError:
        return wiped
    await asyncio.to_thread(collect_points, paths, image)
    return wiped

"""``recipe.json``: what the app needs to know to boot a built image.

The keys are exactly those ``Recipe.load`` in ``sandbox_app/core/images`` reads, with its
defaults; the file names of the image (``vmlinuz``, ``initrd.img``, ``root.qcow2``) are fixed
by the image store and are not in it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import atomic_write


@dataclass(frozen=True)
class Recipe:
    name: str
    append: str  # the kernel command line
    memory_mib: int
    ready_command: str = "true"  # exits 0 once the guest may be snapshotted
    cpus: int = 1
    display: tuple[int, int] = (1024, 768)  # width, height
    open_url_command: tuple[str, ...] = ()  # + the URL; empty: no browser
    loading_color: str | None = None  # "#rrggbb" a page shows before it paints
    downloads_dir: str = "/root/Downloads"
    clipboard_set_command: tuple[str, ...] = ()  # text on stdin; empty: no clipboard
    clipboard_get_command: tuple[str, ...] = ()  # text on stdout
    network_command: str = ""  # (re)applies the network after a restore; empty: none


def write_recipe(out: Path, recipe: Recipe) -> None:
    """``out/recipe.json``, atomically (written last: its presence means a complete build)."""
    data: dict[str, Any] = dataclasses.asdict(recipe)
    width, height = recipe.display
    data["display"] = {"width": width, "height": height}
    atomic_write(out / "recipe.json", json.dumps(data, indent=2) + "\n")

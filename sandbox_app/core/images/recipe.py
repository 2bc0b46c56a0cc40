"""Image recipes: where they live, their hash, and ``recipe.json``, read in one place.

A recipe is a folder under ``vm_images/`` whose ``build.py`` writes an image's base files and
its ``recipe.json`` (how to boot it, what commands its guest offers). ``Recipe.load`` is the
one reader of that file.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ImageError

RECIPES = ("tiny", "browser")


def recipes_dir() -> Path:
    """Where the image recipes live: ``BLANKSLATE_RECIPES``, else the ``vm_images`` package
    (the checkout's folder, or the copy an installed wheel carries as package data; its
    ``build.py`` scripts import ``vm_images.builder`` from the folder above it either way)."""
    env = os.environ.get("BLANKSLATE_RECIPES")
    if env:
        return Path(env)
    root: Path | None
    try:
        root = Path(str(importlib.resources.files("vm_images")))
    except ModuleNotFoundError:
        root = None
    if root is None or not (root / "builder").is_dir():
        raise ImageError("image recipes not found: the vm_images package is missing or "
                         "not a folder (reinstall Blank Slate, or set BLANKSLATE_RECIPES)")
    return root


def recipe_digest(name: str) -> str:
    """One hash of everything in a recipe's directory (build.py and the guest files) and in
    the builder library its build.py imports (vm_images/builder)."""
    root = recipes_dir()
    h = hashlib.sha256()
    files = [p for d in (root / name, root / "builder") for p in d.rglob("*")]
    for path in sorted(p for p in files if p.is_file() and "__pycache__" not in p.parts):
        h.update(f"{path.relative_to(root)}\0{sha256_file(path)}\0".encode())
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def _rgb(color: str) -> tuple[int, int, int]:
    value = int(color.removeprefix("#"), 16)
    return value >> 16, (value >> 8) & 0xFF, value & 0xFF


@dataclass(frozen=True)
class Recipe:
    """What a recipe's ``recipe.json`` says about booting its image."""

    name: str
    append: str
    memory_mib: int
    ready_command: str
    cpus: int = 1
    display: tuple[int, int] = (1024, 768)
    open_url_command: tuple[str, ...] = ()
    # The colour the browser fills its window with while a new page has not painted yet.
    loading_color: tuple[int, int, int] | None = None
    downloads_dir: str = "/root/Downloads"
    clipboard_set_command: tuple[str, ...] = ()  # text on stdin; empty: no clipboard
    clipboard_get_command: tuple[str, ...] = ()  # text on stdout
    network_command: str = ""  # (re)applies the network after a restore; empty: none

    @property
    def persistent_dir(self) -> str:
        """Where the guest mounts the context's persistent folder: ``Persistent`` beside
        the downloads folder, in the same home (the browser's file dialogs show it)."""
        return str(PurePosixPath(self.downloads_dir).parent / "Persistent")

    @classmethod
    def load(cls, path: Path) -> Recipe:
        try:
            d: dict[str, Any] = json.loads(path.read_text())
            disp = d.get("display") or {}
            return cls(
                name=d["name"],
                append=d["append"],
                memory_mib=int(d["memory_mib"]),
                ready_command=d.get("ready_command", "true"),
                cpus=int(d.get("cpus", 1)),
                display=(int(disp.get("width", 1024)), int(disp.get("height", 768))),
                open_url_command=tuple(d.get("open_url_command", ())),
                loading_color=_rgb(d["loading_color"]) if d.get("loading_color") else None,
                downloads_dir=str(d.get("downloads_dir", "/root/Downloads")),
                clipboard_set_command=tuple(map(str, d.get("clipboard_set_command", ()))),
                clipboard_get_command=tuple(map(str, d.get("clipboard_get_command", ()))),
                network_command=str(d.get("network_command", "")),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError,
                RecursionError) as exc:
            raise ImageError(f"image recipe file {path} is unreadable or corrupt") from exc



"""Golden images: recipes, builds and the snapshot points sessions restore from."""

from .recipe import RECIPES, Recipe
from .snapshot import SnapshotPoint
from .store import Image, ImageStore, is_built

__all__ = [
    "RECIPES",
    "Image",
    "ImageStore",
    "Recipe",
    "SnapshotPoint",
    "is_built",
]

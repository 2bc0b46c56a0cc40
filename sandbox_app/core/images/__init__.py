"""Golden images: recipes, builds and the snapshot points sessions restore from.
"""

from .store import RECIPES, Image, ImageStore, Recipe, SnapshotPoint, is_built

__all__ = [
    "RECIPES",
    "Image",
    "ImageStore",
    "Recipe",
    "SnapshotPoint",
    "is_built",
]

"""The engine of Blank Slate. Nothing in this package may import Qt."""

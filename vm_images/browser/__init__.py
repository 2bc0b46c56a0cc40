"""The `browser` guest recipe: Debian bookworm, cage and Firefox ESR as a kiosk (see build.py)."""

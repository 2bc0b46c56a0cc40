"""Blank Slate: every browsing session in its own throwaway virtual machine."""

__version__ = "0.1.0"

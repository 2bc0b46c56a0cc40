"""What the user typed into an address bar → the URL to open.

Like a browser's own bar: text with a scheme is taken as it is, a host name (``example.org``,
``localhost:8080/x``, an IP address) gets ``https://``, and anything else (words, spaces,
a single word with no dot) becomes a search with the context's search engine. Nothing typed
is ever silently dropped.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote_plus

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# Schemes taken as they are even with spaces in them (a data: page, a path with a space).
_KNOWN = re.compile(r"^(https?|data|about|file|view-source|ftp):", re.IGNORECASE)
_HOST_PORT = re.compile(r"^[^:/\s]+:\d+(/|$)")
_HOST = re.compile(r"^(localhost|[^\s/?#]+\.[^\s/?#.]+)(:\d+)?([/?#]|$)", re.IGNORECASE)


def _is_ipv6(text: str) -> bool:
    host = text.split("/", 1)[0]
    if host.startswith("[") and "]" in host:
        host = host[1:host.index("]")]
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


def address_to_url(text: str, search: str) -> str:
    """The URL for ``text``; ``search`` has ``%s`` where the URL-encoded words go.

    Returns ``""`` only for empty (or blank) text.
    """
    text = text.strip()
    if not text:
        return ""
    spaces = any(c.isspace() for c in text)
    if _SCHEME.match(text) and not _HOST_PORT.match(text) and (not spaces or _KNOWN.match(text)):
        return text  # about:, data:, https:… (not host:port)
    if not spaces:
        if _HOST.match(text) or _HOST_PORT.match(text):
            return "https://" + text
        if _is_ipv6(text):
            return "https://" + (text if text.startswith("[") else f"[{text}]")
    return search.replace("%s", quote_plus(text), 1)

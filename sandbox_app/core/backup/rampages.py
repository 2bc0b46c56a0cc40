"""A kept RAM delta in a backup, page by page.

Each keep writes its RAM delta (``vm.guestram``) anew, encrypted as a whole under a fresh
nonce, although most of its pages did not change since the keep before (measured on the
browser image after a small keep: ~70 % of the pages, the same content at the same index). As
a file it would be sent whole by every incremental backup. So a backup decrypts it with the
context key (in memory) and stores it as **page groups**: the pages whose index falls in one
aligned run of ``GROUP`` pages make one chunk, each page as the delta records it (its content,
its XOR with ram.img, or a reference to an earlier page of the delta). A group that did not
change is the same chunk, stored once. A restore turns the groups back into a delta
(``guestram.encode_delta``: the same pages, packed afresh) and encrypts it with the context key,
bound to the label it was bound to. Neither side writes the plaintext anywhere.

A group (plaintext, before the repository seals it): pages in ascending order, each
``<BQ>`` (kind, page index) then 4096 bytes (``LITERAL``, ``XORED``) or ``<Q>`` the source
page (``COPIED``); the last group ends with ``TOTAL`` (index: the number of pages in the RAM).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from ..vm import guestram
from .target import BackupError

# Pages a chunk (256 KiB at most; the browser's delta fills ~1/4 of a group on average).
# The trade, measured on the browser after a small keep (groups sent again / MiB sent): 16
# pages 907 / 1.68, 64 pages 529 / 1.82, 256 pages 286 / 2.02 — every object is a request
# (~1 ms of boto3 CPU each, on top of its latency), so 64.
GROUP = 64
LITERAL, XORED, COPIED, TOTAL = 0, 1, 2, 3
_PAGE = struct.Struct("<BQ")
_SRC = struct.Struct("<Q")
PAGE = guestram.PAGE
_RUN = 64  # pages a rebuilt record holds at most
_KIND = {guestram.RAW: LITERAL, guestram.XZLIB: XORED}
_RECORD = {LITERAL: guestram.RAW, XORED: guestram.XZLIB}


def to_groups(plain: Iterable[bytes]) -> Iterator[bytes]:
    """The page groups of a delta's plaintext (ImageError if it is malformed)."""
    group, parts = -1, []
    for kind, first, count, payload in guestram.parse_delta(plain):
        if kind == guestram.END:
            parts.append(_PAGE.pack(TOTAL, first))
            break
        for k in range(count):
            index = first + k
            if index // GROUP != group and parts:
                yield b"".join(parts)
                parts = []
            group = index // GROUP
            if kind == guestram.COPY:
                assert isinstance(payload, int)
                parts.append(_PAGE.pack(COPIED, index) + _SRC.pack(payload + k))
            else:
                assert isinstance(payload, bytes)
                parts.append(_PAGE.pack(_KIND[kind], index) + payload[k * PAGE:(k + 1) * PAGE])
    if parts:
        yield b"".join(parts)


def to_records(groups: Iterable[bytes]) -> Iterator[guestram.Record]:
    """The delta records (``guestram.parse_delta``'s form) of page groups in order."""
    corrupt = BackupError("a backed-up RAM state is malformed")
    run: list[bytes] = []
    kind = first = src = -1
    last = -1

    def flush() -> guestram.Record:
        if kind == COPIED:
            return guestram.COPY, first, len(run), src
        return _RECORD[kind], first, len(run), b"".join(run)

    for blob in groups:
        pos = 0
        while pos < len(blob):
            if pos + _PAGE.size > len(blob):
                raise corrupt
            page_kind, index = _PAGE.unpack_from(blob, pos)
            pos += _PAGE.size
            if page_kind == TOTAL:
                if run:
                    yield flush()
                yield guestram.END, index, 0, None
                if pos != len(blob):
                    raise corrupt
                return
            if index <= last or page_kind not in (LITERAL, XORED, COPIED):
                raise corrupt
            last = index
            if page_kind == COPIED:
                if pos + _SRC.size > len(blob):
                    raise corrupt
                (page_src,) = _SRC.unpack_from(blob, pos)
                pos += _SRC.size
                if page_src >= index:
                    raise corrupt
                # one COPY record: consecutive sources, all written before the run starts
                joins = (kind == COPIED and index == first + len(run)
                         and page_src == src + len(run) and src + len(run) + 1 <= first)
                data = b""
            else:
                data = blob[pos:pos + PAGE]
                pos += PAGE
                if len(data) != PAGE:
                    raise corrupt
                joins = kind == page_kind and index == first + len(run)
            if run and (not joins or len(run) >= _RUN):
                yield flush()
                run = []
            if not run:
                kind, first = page_kind, index
                src = page_src if page_kind == COPIED else -1
            run.append(data)
    raise corrupt  # no TOTAL: truncated

"""``blankslate backup`` and ``blankslate restore``: the CLI of ``core.backup``.

    blankslate backup [CONTEXT...] --to TARGET [--passphrase-stdin] [--json]
    blankslate backup list --from TARGET [--json]
    blankslate backup check --from TARGET
    blankslate restore [CONTEXT...] --from TARGET [--snapshot ID] [--as NEWNAME]

(``list`` and ``check`` after ``backup`` are these actions, never context names.)
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any

from .core.backup import (
    BackupError,
    Repository,
    backup,
    check,
    open_target,
    restore,
    snapshot_summary,
)
from .core.errors import AuthError, UsageError
from .core.storage import Paths

ACTIONS = ("list", "check")


class _Progress:
    """Progress lines on stderr (rewritten in place on a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last = ""

    def __call__(self, phase: str, fraction: float | None) -> None:
        pct = "    " if fraction is None else f"{fraction * 100:3.0f}%"
        line = f"[{pct}] {phase}"
        if line != self._last:
            self._last = line
            sys.stderr.write(("\r\033[K" + line) if self.tty else line + "\n")
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self._last:
            sys.stderr.write("\n")


def _passphrase(args: argparse.Namespace, *, new: bool) -> str:
    """The backup passphrase: a line of stdin, or asked (twice for a new backup)."""
    if args.passphrase_stdin:
        line = sys.stdin.readline()
        if not line.rstrip("\n"):
            raise AuthError("no backup passphrase on standard input")
        return line.rstrip("\n")
    if not sys.stdin.isatty():
        raise AuthError("a backup passphrase is needed: give it with --passphrase-stdin")
    first = getpass.getpass("Backup passphrase: " if not new else "New backup passphrase: ")
    if not first:
        raise AuthError("a backup needs a passphrase")
    if new and getpass.getpass("Repeat it: ") != first:
        raise UsageError("the two passphrases differ: nothing was backed up")
    return first


def _target(args: argparse.Namespace, spec: str | None, flag: str) -> Any:
    if not spec:
        raise UsageError(f"say where: {flag} DIR or {flag} s3://BUCKET/PREFIX")
    return open_target(spec, args.s3_endpoint)


async def cmd_backup(paths: Paths, args: argparse.Namespace) -> int:
    words = list(args.words)
    if words and words[0] in ACTIONS:
        action, rest = words[0], words[1:]
        if rest:
            raise UsageError(f"backup {action} takes no context names")
        return await _cmd_list(args) if action == "list" else await _cmd_check(args)
    target = _target(args, args.to, "--to")
    passphrase = _passphrase(args, new=not Repository.initialized(target))
    progress = _Progress()
    try:
        report = backup(paths, target, passphrase, words, progress)
    finally:
        progress.done()
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        s = report.stats
        print(f"snapshot {report.snapshot}: {', '.join(report.contexts)}; sent {s.objects_sent} "
              f"objects, {s.bytes_sent / 2**20:.1f} MiB ({s.bytes_skipped / 2**20:.1f} MiB "
              f"already there) in {report.seconds:.1f} s", file=sys.stderr)
    return 0


async def _cmd_list(args: argparse.Namespace) -> int:
    target = _target(args, args.source or args.to, "--from")
    repo = Repository.open(target, _passphrase(args, new=False))
    snaps = snapshot_summary(repo)
    if args.json:
        print(json.dumps(snaps, indent=2))
        return 0
    if not snaps:
        print(f"{target.description}: no snapshot yet", file=sys.stderr)
    for s in snaps:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["created_at"] or 0))
        ctxs = ", ".join(f"{n} ({c['bytes'] / 2**20:.1f} MiB)" for n, c in s["contexts"].items())
        print(f"{s['snapshot']}  {when}  {ctxs}")
    return 0


async def _cmd_check(args: argparse.Namespace) -> int:
    target = _target(args, args.source or args.to, "--from")
    progress = _Progress()
    try:
        report = check(target, _passphrase(args, new=False), progress)
    finally:
        progress.done()
    for problem in report.problems:
        print(f"blankslate: {problem}", file=sys.stderr)
    if report.problems:
        raise BackupError(f"{target.description}: {len(report.problems)} problem(s) in "
                          f"{report.objects} objects and {report.snapshots} snapshots")
    print(f"{target.description}: {report.snapshots} snapshots and {report.objects} objects "
          f"({report.bytes / 2**20:.1f} MiB) read back and verified", file=sys.stderr)
    return 0


async def cmd_restore(paths: Paths, args: argparse.Namespace) -> int:
    target = _target(args, args.source, "--from")
    passphrase = _passphrase(args, new=False)
    progress = _Progress()
    try:
        report = restore(paths, target, passphrase, args.contexts, snapshot=args.snapshot,
                         as_name=args.as_name, progress=progress)
    finally:
        progress.done()
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(f"restored {', '.join(report.contexts)} from snapshot {report.snapshot} "
              f"({report.stats.bytes_received / 2**20:.1f} MiB in {report.seconds:.1f} s)",
              file=sys.stderr)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-stdin", action="store_true",
                   help="read the backup passphrase from the first line of stdin")
    p.add_argument("--s3-endpoint", metavar="URL",
                   help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub: Any) -> None:
    """Add ``backup`` and ``restore`` to the top-level subparsers ``sub``."""
    b = sub.add_parser(
        "backup", help="encrypted, deduplicated backup of contexts to a folder or S3",
        description="blankslate backup [CONTEXT...] --to TARGET | backup list --from TARGET "
                    "| backup check --from TARGET. TARGET: a directory or s3://BUCKET/PREFIX.")
    b.add_argument("words", nargs="*", metavar="CONTEXT",
                   help="contexts to back up (default: all); or 'list' / 'check'")
    b.add_argument("--to", metavar="TARGET", help="where to back up")
    b.add_argument("--from", dest="source", metavar="TARGET", help="for list and check")
    _common(b)
    b.set_defaults(func=cmd_backup)
    r = sub.add_parser("restore", help="restore contexts from a backup into this home")
    r.add_argument("contexts", nargs="*", metavar="CONTEXT", help="default: all in the snapshot")
    r.add_argument("--from", dest="source", metavar="TARGET", required=True)
    r.add_argument("--snapshot", metavar="ID", help="default: the newest")
    r.add_argument("--as", dest="as_name", metavar="NEWNAME", help="restore one context "
                   "under another name")
    _common(r)
    r.set_defaults(func=cmd_restore)

"""``blankslate``: the command line, a thin shell over ``sandbox_app.core``.

One idea over 400 lines: the parser and one small function a subcommand.

Exit codes (``clihelp.EXIT_CODES``, shown by ``--help``): 0 ok, 1 other error, 2 bad
usage/name, 3 unknown context/image, 4 QEMU missing or failed, 5 image/snapshot missing or
corrupt, 6 disk full, 7 wrong passphrase/locked, 8 guest agent failure, 130 cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import getpass
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, cli_backup
from .clihelp import Parser, epilog
from .core.contexts import (
    DEFAULT_SEARCH,
    ContextStore,
    DownloadsTo,
    ExitDefault,
    Journal,
    Network,
    Profile,
    context_lock,
    key_store,
    parse_dns,
    rename_context,
)
from .core.errors import AuthError, BlankSlateError, UsageError
from .core.guest import (
    ClipboardPolicy,
    copy_from_guest,
    copy_to_guest,
    list_downloads,
    save_to_host,
    send_to_guest,
)
from .core.guest.text import terminal_safe
from .core.images import ImageStore
from .core.session import (
    AppSettings,
    Session,
    SessionState,
    check_context,
    discard_suspended,
)
from .core.session.control import HOWS, ControlServer, ask, live_sessions
from .core.session.updates import image_note, reset_context, update_image
from .core.storage import Paths
from .core.vm import TCG_WARNING, Accel
from .core.vm.process import forbid_core_dumps
from .desktop import missing_display
from .logfile import FILE_ONLY, log_to_stderr, start_log_file

log = logging.getLogger("blankslate")

_T0 = time.monotonic()


class _StderrProgress:
    """Progress lines on stderr; rewritten in place on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last = ""

    def __call__(self, phase: str, fraction: float | None) -> None:
        pct = "    " if fraction is None else f"{fraction * 100:3.0f}%"
        line = f"[{pct}] {phase}"
        if line == self._last:
            return
        self._last = line
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self._last:
            sys.stderr.write("\n")


def _warn_accel(accel: Accel) -> None:
    if accel is Accel.TCG:
        print(f"blankslate: warning: {TCG_WARNING}", file=sys.stderr)


# ------------------------------------------------------------------------------- commands


async def cmd_image_build(paths: Paths, args: argparse.Namespace) -> int:
    progress = _StderrProgress()
    store = ImageStore(paths)
    t0 = time.monotonic()
    try:
        image = await store.build(args.name, force=args.force, progress=progress)
    finally:
        progress.done()
    _warn_accel(store.accel_for(image))
    print(f"image '{image.name}' ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


async def cmd_image_update(paths: Paths, args: argparse.Namespace) -> int:
    progress = _StderrProgress()
    t0 = time.monotonic()
    try:
        image = await update_image(paths, args.name, progress)
    finally:
        progress.done()
    print(f"image '{image.name}' updated in {time.monotonic() - t0:.1f}s; kept contexts stay "
          "on their earlier image until 'blankslate context reset NAME'", file=sys.stderr)
    return 0


async def cmd_context_reset(paths: Paths, args: argparse.Namespace) -> int:
    wiped = await reset_context(paths, args.name)
    print(f"context '{args.name}' starts fresh on its image ({wiped} bytes securely erased; "
          "its persistent folder is kept)", file=sys.stderr)
    return 0


async def cmd_image_list(paths: Paths, args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for image in ImageStore(paths).list():
        m = image.manifest()
        rows.append({"name": image.name, "built_at": m.get("built_at"),
                     "size_bytes": image.size_bytes(),
                     "memory_mib": image.recipe.memory_mib})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:<12} {r['size_bytes'] / 2**20:8.1f} MiB  "
                  f"{r['memory_mib']} MiB RAM  built {time.ctime(r['built_at'])}")
    return 0


def _size_mib(text: str) -> int:
    """``1G``, ``512M``, ``512`` (MiB) or ``0`` → MiB."""
    units = {"M": 1, "G": 1024, "T": 1024 * 1024}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        return int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)
    except ValueError:
        raise UsageError(f"invalid size '{text}': use e.g. 512M, 1G or 0") from None


async def cmd_context_create(paths: Paths, args: argparse.Namespace) -> int:
    profile = Profile(
        name=args.name, image=args.image, memory_mib=args.memory,
        network=Network(args.network), on_exit=ExitDefault(args.on_exit),
        clipboard=ClipboardPolicy(args.clipboard), dns=parse_dns(args.dns),
        data_mib=_size_mib(args.data_size), downloads=DownloadsTo(args.downloads),
        **({"search": args.search} if args.search else {}),
    )
    if args.color:
        profile.color = args.color
    ContextStore(paths).create(profile)
    print(f"context '{args.name}' created", file=sys.stderr)
    return 0


# ``context set`` option → (Profile field, how its value is read).
_SETTABLE: dict[str, tuple[str, Any]] = {
    "color": ("color", str),
    "memory": ("memory_mib", lambda mib: mib or None),  # 0: the image's default again
    "network": ("network", Network),
    "on_exit": ("on_exit", ExitDefault),
    "clipboard": ("clipboard", ClipboardPolicy),
    "dns": ("dns", parse_dns),
    "search": ("search", str),
    "downloads": ("downloads", DownloadsTo),
}


async def cmd_context_set(paths: Paths, args: argparse.Namespace) -> int:
    store = ContextStore(paths)
    profile = store.get(args.name).profile
    changes = {field: read(getattr(args, option)) for option, (field, read) in _SETTABLE.items()
               if getattr(args, option) is not None}
    if not changes:
        raise UsageError("nothing to change: give at least one setting (see --help)")
    store.update(dataclasses.replace(profile, **changes))
    print(f"context '{args.name}': {', '.join(sorted(changes))} changed (from its next "
          "session on)", file=sys.stderr)
    return 0


async def cmd_context_rename(paths: Paths, args: argparse.Namespace) -> int:
    ContextStore(paths).get(args.name)
    rename_context(paths, args.name, args.new_name,
                   _passphrase_for(paths, args.name, args))
    print(f"context '{args.name}' renamed to '{args.new_name}'", file=sys.stderr)
    return 0


async def cmd_context_list(paths: Paths, args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    contexts, broken = ContextStore(paths).scan()
    images = {i.name: i for i in ImageStore(paths).list()}
    for ctx in contexts:
        p = ctx.profile
        m = ctx.manifest()
        image = images.get(p.image)
        rows.append({"name": p.name, "image": p.image, "color": p.color,
                     "memory_mib": p.memory_mib, "network": p.network.value,
                     "on_exit": p.on_exit.value, "clipboard": p.clipboard.value,
                     "dns": list(p.dns) or "host", "search": p.search,
                     "data_mib": p.data_mib,
                     "size_bytes": ctx.size_bytes(),
                     "kept_at": m.kept_at,
                     "suspended_at": (ctx.suspended_path.stat().st_mtime
                                      if ctx.suspended_path.exists() else None),
                     "image_built_at": image.built_at if image else None,
                     "image_note": image_note(ctx, image) if image else "image not built"})
    rows += [{"name": b.name, "broken": b.reason} for b in broken]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            if "broken" in r:
                print(f"{r['name']:<16} BROKEN: {r['broken']}")
                continue
            print(f"{r['name']:<16} {r['image']:<8} {r['color']}  {r['network']:<8} "
                  f"exit={r['on_exit']:<7} clipboard={r['clipboard']:<13} "
                  f"{r['size_bytes'] / 2**20:.1f} MiB"
                  f"{'  (suspended session)' if r['suspended_at'] else ''}"
                  f"{'  ' + r['image_note'] if r['image_note'] else ''}")
    return 0


async def cmd_context_remove(paths: Paths, args: argparse.Namespace) -> int:
    store = ContextStore(paths)
    with context_lock(paths, args.name):
        if any(r.context == args.name and r.owner_alive() for r in Journal(paths).records()):
            raise UsageError(f"context '{args.name}' has a running session: stop it first")
        wiped = store.remove(args.name)
    key_store(paths).remove(args.name)
    print(f"context '{args.name}' removed ({wiped} bytes securely erased)", file=sys.stderr)
    return 0


def _read_secret(args: argparse.Namespace, prompt: str) -> str:
    """One passphrase: a line of stdin with --passphrase-stdin, else a terminal prompt."""
    if args.passphrase_stdin:
        line = sys.stdin.readline()
        if not line:
            raise AuthError("no passphrase on standard input")
        return line.rstrip("\n")
    if not sys.stdin.isatty():
        raise AuthError("a passphrase is needed: give it with --passphrase-stdin")
    return getpass.getpass(prompt)


def _passphrase_for(paths: Paths, name: str, args: argparse.Namespace) -> str | None:
    if not key_store(paths).is_protected(name):
        return None
    return _read_secret(args, f"Passphrase for context '{name}': ")


async def cmd_context_passphrase(paths: Paths, args: argparse.Namespace) -> int:
    ctx = ContextStore(paths).get(args.name)
    store = key_store(paths)
    old = _passphrase_for(paths, ctx.name, args)
    new = _read_secret(args, "New passphrase (empty: none): ") or None
    if new and not args.passphrase_stdin and getpass.getpass("Repeat it: ") != new:
        raise UsageError("the two passphrases differ: nothing changed")
    if store.exists(ctx.name):
        store.change_passphrase(ctx.name, old, new)
    else:
        store.create(ctx.name, new)
    state = "set" if new else "removed"
    print(f"context '{ctx.name}': passphrase {state}", file=sys.stderr)
    if store.last_warning:
        print(f"blankslate: warning: {store.last_warning}", file=sys.stderr)
    return 0


async def cmd_context_check(paths: Paths, args: argparse.Namespace) -> int:
    ctx = ContextStore(paths).get(args.name)
    n = await check_context(paths, ctx, _passphrase_for(paths, ctx.name, args))
    print(f"context '{ctx.name}': {n} disk layers checked, no errors", file=sys.stderr)
    return 0


async def cmd_run(paths: Paths, args: argparse.Namespace) -> int:
    ctx = ContextStore(paths).get(args.context)
    passphrase = _passphrase_for(paths, ctx.name, args)
    progress = _StderrProgress()
    if args.discard_suspended:
        await discard_suspended(paths, ctx)
    session = await Session.start(paths, ctx, cold=args.cold, passphrase=passphrase,
                                  resume=args.resume, progress=progress)
    progress.done()
    _warn_accel(session.accel)
    shown = list(session.warnings)
    for warning in shown:
        print(f"blankslate: warning: {warning}", file=sys.stderr)
    # Headless sessions cannot ask: "ask" means discard (nothing kept without consent).
    on_exit = args.on_exit or ("keep" if ctx.profile.on_exit is ExitDefault.KEEP else "discard")
    results: list[dict[str, Any]] = []
    transfers: dict[str, list[str]] = {"put": [], "saved": []}
    downloads = session.image.recipe.downloads_dir
    clipboard_out: str | None = None
    opened_url = ""
    url_s: list[float] = []  # each --url: request → page drawn and still
    ended_by: list[str] = []  # "keep"/"discard"/"suspend" asked by `session stop`
    ended = asyncio.Event()

    async def work() -> None:
        nonlocal shown, clipboard_out, opened_url
        agent = await session.ready()  # the agent answers, clock set, network lease applied
        for warning in session.warnings[len(shown):]:
            print(f"blankslate: warning: {warning}", file=sys.stderr)
        shown = list(session.warnings)
        for src in args.put or []:
            transfers["put"].append(await send_to_guest(agent, Path(src), downloads))
        if args.clipboard_in is not None:
            await copy_to_guest(agent, session.image.recipe, ctx.profile.clipboard,
                                args.clipboard_in)
        for url in args.url or []:
            t_url = time.monotonic()
            opened_url = await session.open_url(url)
            url_s.append(time.monotonic() - t_url)
        if args.screenshot:
            await session.screenshot(Path(args.screenshot))
        for cmd in args.exec or []:
            res = await session.exec(cmd)
            results.append({
                "cmd": cmd, "exit_code": res.exit_code,
                "stdout": res.stdout.decode(errors="replace"),
                "stderr": res.stderr.decode(errors="replace"),
            })
            if not args.json:
                sys.stdout.write(terminal_safe(res.stdout.decode(errors="replace")))
                sys.stderr.write(terminal_safe(res.stderr.decode(errors="replace")))
        if args.clipboard_out:
            clipboard_out = await copy_from_guest(agent, session.image.recipe,
                                                  ctx.profile.clipboard)
            if not args.json:
                sys.stdout.write(terminal_safe(clipboard_out))
        if args.save_downloads:
            for item in await list_downloads(agent, downloads):
                saved = await save_to_host(agent, downloads, item,
                                           Path(args.save_downloads))
                transfers["saved"].append(str(saved))

    async def control(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("op") == "info":
            return {"sessions": [{"context": ctx.name, "memory_mib": session.memory_mib,
                                  "changed_bytes": session.changed_bytes(),
                                  "state": session.state.value}]}
        if request.get("op") == "stop" and request.get("context") == ctx.name \
                and request.get("how") in HOWS:
            ended_by.append(str(request["how"]))
            body.cancel()
            await ended.wait()
            return {"ok": True}
        raise UsageError(f"cannot {request.get('op')} '{request.get('context')}' here")

    body = asyncio.ensure_future(work())
    server = await ControlServer(paths, control).start()
    try:
        try:
            await body
        except asyncio.CancelledError:
            if not ended_by:
                raise
            on_exit = ended_by[0]
        if on_exit in ("keep", "suspend"):
            report = await (session.keep() if on_exit == "keep" else session.suspend())
            for warning in session.warnings[len(shown):]:
                print(f"blankslate: warning: {warning}", file=sys.stderr)
    finally:
        if session.state is not SessionState.ENDED:
            report = await asyncio.shield(session.discard())
        ended.set()
        await server.close()
    out = {
        "context": ctx.name,
        "launch_s": _r(session.timings.launch_s),
        "restore_s": _r(session.timings.restore_s),
        "agent_s": _r(session.timings.agent_s),
        "network_s": _r(session.timings.network_s),
        "exec": results,
        **({"put": transfers["put"]} if args.put else {}),
        **({"saved": transfers["saved"]} if args.save_downloads else {}),
        **({"clipboard": clipboard_out} if args.clipboard_out else {}),
        **({"url": opened_url, "url_s": [_r(t) for t in url_s]} if args.url else {}),
        **({"screenshot": str(Path(args.screenshot).resolve())} if args.screenshot else {}),
        "on_exit": on_exit,
        "changed_bytes": report.changed_bytes,
        "wiped_bytes": report.wiped_bytes,
        "end_s": _r(report.end_s),
        "total_s": _r(time.monotonic() - _T0),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0  # the guest commands' exit codes are in the report
    # Like ssh: without --json, a failing guest command is our exit status.
    failed = [r["exit_code"] for r in results if r["exit_code"] != 0]
    return int(failed[-1]) if failed else 0


async def cmd_session_list(paths: Paths, args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    infos: dict[int, dict[str, dict[str, Any]]] = {}
    for rec in live_sessions(paths):
        if rec.owner_pid not in infos:
            try:
                reply = await ask(paths, rec.owner_pid, {"op": "info"}, timeout=10)
                infos[rec.owner_pid] = {i["context"]: i for i in reply.get("sessions", [])}
            except BlankSlateError:
                infos[rec.owner_pid] = {}
        info = infos[rec.owner_pid].get(rec.context)
        if info is None:
            continue  # a standby or a session still starting
        rows.append({"context": rec.context, "pid": rec.owner_pid, "qemu_pid": rec.qemu_pid,
                     "since": rec.started_at, "memory_mib": info.get("memory_mib"),
                     "changed_bytes": info.get("changed_bytes"), "state": info.get("state")})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["since"]))
        print(f"{r['context']:<16} pid {r['pid']:<8} since {since}  {r['memory_mib']} MiB  "
              f"changed {r['changed_bytes'] / 2**20:.1f} MiB  {r['state']}")
    return 0


async def cmd_session_stop(paths: Paths, args: argparse.Namespace) -> int:
    ContextStore(paths).get(args.context)
    owners = {r.owner_pid for r in live_sessions(paths) if r.context == args.context}
    if not owners:
        raise UsageError(f"context '{args.context}' has no running session")
    how = args.how or "discard"
    for pid in owners:
        with contextlib.suppress(BlankSlateError):  # a standby's owner holds no session
            await ask(paths, pid, {"op": "stop", "context": args.context, "how": how})
            print(f"{args.context}: {'kept' if how == 'keep' else how + 'ed'}")
            return 0
    raise BlankSlateError(f"no process answered for the session of '{args.context}'")


async def _deliver(paths: Paths, request: dict[str, Any]) -> bool:
    """Hand a request to a running app (its control socket); False if none takes it."""
    socks = sorted(paths.runtime.glob("control-*.sock")) if paths.runtime.is_dir() else []
    for sock in socks:
        pid = sock.stem.removeprefix("control-")
        if not pid.isdigit():
            continue
        with contextlib.suppress(BlankSlateError):  # a `run` process, or a dead one
            await ask(paths, int(pid), request, timeout=10)
            return True
    return False


def cmd_open(paths: Paths, args: argparse.Namespace) -> int:
    """A link from another app: into the running app's session of the context (started if
    need be), or a new app showing it."""
    if not args.url:  # the menu entry: the launcher (of the app already running, if any)
        return 0 if asyncio.run(_deliver(paths, {"op": "show"})) else _gui([])
    name = args.context or AppSettings.load(paths).link_context
    ContextStore(paths).get(name)
    if asyncio.run(_deliver(paths, {"op": "open", "context": name, "url": args.url})):
        return 0
    return _gui(["--open", name, "--url", args.url])


def _gui(argv: list[str]) -> int:
    # Without a display Qt aborts (SIGABRT): say why in one line instead.
    if (problem := missing_display()) is not None:
        raise BlankSlateError(problem)
    # Qt is imported only when a window is wanted: the CLI and core stay Qt-free.
    from .gui.app import main as gui_main  # noqa: PLC0415

    rc: int = gui_main(argv)
    return rc


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


# ------------------------------------------------------------------------------- parser


def _profile_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """The settings ``context create`` takes and ``context set`` changes (None: unchanged)."""
    def d(value: str) -> str | None:
        return value if defaults else None

    p.add_argument("--color", help="frame color, #RRGGBB")
    p.add_argument("--memory", type=int, metavar="MIB",
                   help="guest RAM (default: image's" + ("" if defaults else "; 0: that again")
                   + ")")
    p.add_argument("--network", choices=[n.value for n in Network], default=d("internet"))
    p.add_argument("--on-exit", choices=[e.value for e in ExitDefault], default=d("ask"))
    p.add_argument("--clipboard", choices=[v.value for v in ClipboardPolicy],
                   default=d(ClipboardPolicy.HOST_TO_GUEST.value),
                   help="which way clipboard text may be copied (on request only)")
    p.add_argument("--dns", default=d("host"), metavar="host|ADDR[,ADDR]",
                   help="the guest's DNS servers: the host's (default) or up to three "
                        "addresses, e.g. a filtering resolver")
    p.add_argument("--downloads", choices=[v.value for v in DownloadsTo],
                   default=d(DownloadsTo.SESSION.value),
                   help="where the browser's downloads land: the session (thrown away "
                        "unless moved or saved) or the persistent folder")
    p.add_argument("--search", metavar="URL",
                   help="search engine for address-bar text that is not an address, with %%s "
                        f"for the words (default {DEFAULT_SEARCH.replace('%', '%%')})")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="blankslate",
        description="Every browsing session in its own throwaway virtual machine.\n"
                    "With no command: the desktop app.",
        epilog=epilog(),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    p.add_argument("--debug", action="store_true",
                   help="debug detail in the log file (see below)")
    sub = p.add_subparsers(dest="command")

    img = sub.add_parser("image", help="build and list guest images").add_subparsers(
        dest="image_command", required=True)
    b = img.add_parser("build", help="build an image and its golden snapshot point")
    b.add_argument("name", choices=["tiny", "browser"])
    b.add_argument("--force", action="store_true", help="rebuild even if present")
    b.set_defaults(func=cmd_image_build)
    up = img.add_parser("update", help="rebuild an image with current packages (sessions "
                        "go on; kept contexts stay on the earlier build until reset)")
    up.add_argument("name", choices=["tiny", "browser"])
    up.set_defaults(func=cmd_image_update)
    ls = img.add_parser("list", help="list built images")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_image_list)

    ctx = sub.add_parser("context", help="manage contexts").add_subparsers(
        dest="context_command", required=True)
    c = ctx.add_parser("create", help="create a context")
    c.add_argument("name")
    c.add_argument("--image", default="browser")
    c.add_argument("--data-size", default="1G", metavar="SIZE",
                   help="the persistent folder (sparse; 0: none; default: %(default)s)")
    _profile_options(c, defaults=True)
    c.set_defaults(func=cmd_context_create)
    st = ctx.add_parser("set", help="change a context's settings (from its next session on)")
    st.add_argument("name")
    _profile_options(st, defaults=False)
    st.set_defaults(func=cmd_context_set)
    rn = ctx.add_parser("rename", help="rename a context (not while it has a session)")
    rn.add_argument("name")
    rn.add_argument("new_name", metavar="NEW_NAME")
    rn.add_argument("--passphrase-stdin", action="store_true")
    rn.set_defaults(func=cmd_context_rename)
    cl = ctx.add_parser("list", help="list contexts")
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=cmd_context_list)
    rs = ctx.add_parser("reset", help="start a context fresh on its image's current build "
                        "(drops its kept session state, keeps its persistent folder)")
    rs.add_argument("name")
    rs.set_defaults(func=cmd_context_reset)
    cr = ctx.add_parser("remove", help="remove a context and securely erase its data")
    cr.add_argument("name")
    cr.set_defaults(func=cmd_context_remove)
    cp = ctx.add_parser("passphrase", help="set, change or remove a context's passphrase")
    cp.add_argument("name")
    cp.add_argument("--passphrase-stdin", action="store_true",
                    help="read the old (if any) and the new passphrase as lines of stdin")
    cp.set_defaults(func=cmd_context_passphrase)
    ck = ctx.add_parser("check", help="verify a context's disk layers and saved state")
    ck.add_argument("name")
    ck.add_argument("--passphrase-stdin", action="store_true")
    ck.set_defaults(func=cmd_context_check)

    g = sub.add_parser("gui", help="open the desktop app (the default)")
    g.set_defaults(func=None)

    ses = sub.add_parser("session", help="sessions running now (in the app or `run`)"
                         ).add_subparsers(dest="session_command", required=True)
    sl = ses.add_parser("list", help="list running sessions")
    sl.add_argument("--json", action="store_true")
    sl.set_defaults(func=cmd_session_list)
    st = ses.add_parser("stop", help="end a running session (default: discard)")
    st.add_argument("context")
    how = st.add_mutually_exclusive_group()
    for h in HOWS:
        how.add_argument(f"--{h}", dest="how", action="store_const", const=h)
    st.set_defaults(func=cmd_session_stop)
    ss = ses.add_parser("suspend", help="suspend a running session (resumed at its next start)")
    ss.add_argument("context")
    ss.set_defaults(func=cmd_session_stop, how="suspend")

    op = sub.add_parser("open", help="open a link in a throwaway session (what the desktop "
                        "runs for http/https links from other apps)")
    op.add_argument("url", nargs="?", help="without it: the launcher")
    op.add_argument("--context", help="the context (default: link_context in "
                                      "config/app.toml, else personal)")
    op.set_defaults(func=cmd_open)

    r = sub.add_parser("run", help="start a session of a context")
    r.add_argument("context")
    r.add_argument("--headless", action="store_true", help="no window")
    r.add_argument("--exec", action="append", metavar="CMD", help="run `sh -c CMD` in the guest")
    r.add_argument("--on-exit", choices=["discard", "keep", "suspend"])
    sus = r.add_mutually_exclusive_group()
    sus.add_argument("--resume", action="store_true",
                     help="resume the context's suspended session")
    sus.add_argument("--discard-suspended", action="store_true",
                     help="securely erase the context's suspended session, then start afresh")
    r.add_argument("--cold", action="store_true", help="boot from scratch (for comparison)")
    r.add_argument("--json", action="store_true", help="print a JSON report")
    r.add_argument("--passphrase-stdin", action="store_true",
                   help="read the context's passphrase from stdin")
    r.add_argument("--put", action="append", metavar="FILE",
                   help="copy a host file into the guest's Downloads folder first")
    r.add_argument("--url", action="append", metavar="URL",
                   help="open URL (or search for the words) in the session's browser and wait "
                        "until it drew; repeatable: one after another")
    r.add_argument("--screenshot", metavar="PNG",
                   help="with --headless: save the screen as PNG (after --url's page loaded)")
    r.add_argument("--clipboard-in", metavar="TEXT",
                   help="put TEXT into the guest clipboard (before the commands run)")
    r.add_argument("--clipboard-out", action="store_true",
                   help="print the guest clipboard (after the commands; 'clipboard' in --json)")
    r.add_argument("--save-downloads", metavar="DIR",
                   help="before the session ends, copy the guest's downloads into DIR")
    r.set_defaults(func=cmd_run)
    cli_backup.register(sub)
    return p


def _raise_interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _dispatch(paths: Paths, args: argparse.Namespace) -> int:
    """The command: a window (the app), or a CLI command on its own event loop."""
    if getattr(args, "func", None) is None:
        return _gui([])
    if args.func is cmd_open:
        opened: int = cmd_open(paths, args)
        return opened
    if args.func is cmd_run and not args.headless:
        ContextStore(paths).get(args.context)
        if args.exec or args.json or args.screenshot or args.put or args.save_downloads:
            raise UsageError("--exec, --json, --screenshot, --put and --save-downloads "
                             "need --headless")
        return _gui(["--open", args.context, *(["--url", args.url[-1]] if args.url else [])])
    rc: int = asyncio.run(args.func(paths, args))
    return rc


def _command(args: argparse.Namespace) -> str:
    """``image build`` and the like, for the log (never the arguments: they may be private)."""
    words = [str(args.command or "gui")]
    words += [str(v) for k, v in vars(args).items() if k.endswith("_command") and v]
    return " ".join(words)


def _os_error_text(exc: OSError) -> str:
    """``PATH: reason`` (both paths of a rename), or the error's own text."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    if names and exc.strerror:
        return f"{' -> '.join(names)}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _fail(message: str, code: int) -> int:
    print(f"blankslate: error: {terminal_safe(message)}", file=sys.stderr)
    log.error("exit %d: %s", code, message, extra=FILE_ONLY)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    forbid_core_dumps()  # the app holds keys: no core file, no /proc/PID/mem for others
    parser = build_parser()
    args = parser.parse_args(argv)
    log_to_stderr(args.verbose)

    # SIGTERM ends us like Ctrl-C does: cancellation, so sessions are cleaned up.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        paths = Paths.from_env().ensure()
        start_log_file(paths, debug=args.debug)
        log.info("blankslate %s: %s", __version__, _command(args))
        Journal(paths).recover()
        ContextStore(paths).ensure_defaults()
        return _dispatch(paths, args)
    except BlankSlateError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("blankslate: cancelled", file=sys.stderr)
        log.info("cancelled")
        return 130
    except OSError as exc:
        log.debug("the error's traceback", exc_info=exc, extra=FILE_ONLY)
        return _fail(_os_error_text(exc), 6 if exc.errno == errno.ENOSPC else 1)
    except Exception:  # a bug: its traceback goes to the log too, then up as always
        log.exception("unexpected error", extra=FILE_ONLY)
        raise


if __name__ == "__main__":
    sys.exit(main())

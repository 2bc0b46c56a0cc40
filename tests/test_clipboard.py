"""Clipboard text between host and guest, per context policy (real QEMU, tiny guest).

The tiny guest's clipboard is a root-only file behind the same set/get interface as the
browser image's Wayland clipboard (see vm_images/tiny/build.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from helpers import run_cli

from sandbox_app.core.contexts import ContextStore, Network, Profile
from sandbox_app.core.errors import GuestError
from sandbox_app.core.guest import (
    ClipboardPolicy,
    ClipboardRefused,
    clipboard,
    copy_from_guest,
    copy_to_guest,
)
from sandbox_app.core.guest.clipboard import clean_text
from sandbox_app.core.images import Recipe
from sandbox_app.core.session import Session
from sandbox_app.core.storage import Paths

GUEST_FILE = "/run/blankslate-clipboard"
TEXT = "héllo, wörld 🌍\nsecond line\tend"


def in_session(paths: Paths, policy: ClipboardPolicy,
               scenario: Callable[[Session], Awaitable[Any]]) -> Any:
    """Run ``scenario`` against a fresh session of a context with ``policy``."""
    name = f"clip-{policy.value}"
    ContextStore(paths).create(Profile(name=name, image="tiny", network=Network.NONE,
                                       clipboard=policy))

    async def run() -> Any:
        session = await Session.start(paths, ContextStore(paths).get(name))
        try:
            return await scenario(session)
        finally:
            await session.discard()

    return asyncio.run(run())


async def guest_clipboard(session: Session) -> str:
    """What the guest clipboard holds, read behind the app's back."""
    return (await session.exec(f"cat {GUEST_FILE} 2>/dev/null")).stdout.decode()


async def copy_in(session: Session, text: str) -> int:
    assert session.agent is not None
    return await copy_to_guest(session.agent, session.image.recipe,
                               session.context.profile.clipboard, text)


async def copy_out(session: Session) -> str:
    assert session.agent is not None
    return await copy_from_guest(session.agent, session.image.recipe,
                                 session.context.profile.clipboard)


# ---------------------------------------------------------------------------- real QEMU


def test_policy_both_round_trips_text(tiny_paths: Paths) -> None:
    async def scenario(session: Session) -> float:
        t0 = time.monotonic()
        await copy_in(session, TEXT)
        assert await copy_out(session) == TEXT
        elapsed = time.monotonic() - t0
        assert await guest_clipboard(session) == TEXT
        return elapsed

    elapsed = in_session(tiny_paths, ClipboardPolicy.BOTH, scenario)
    print(f"clipboard round trip (host→guest→host, TCG): {elapsed * 1000:.0f} ms")


def test_policy_host_to_guest_refuses_the_way_back(tiny_paths: Paths) -> None:
    async def scenario(session: Session) -> None:
        await copy_in(session, "to the guest")
        assert await guest_clipboard(session) == "to the guest"
        with pytest.raises(ClipboardRefused, match="does not allow copying from the guest"):
            await copy_out(session)

    in_session(tiny_paths, ClipboardPolicy.HOST_TO_GUEST, scenario)


def test_policy_off_blocks_both_ways_and_leaves_the_guest_clipboard_alone(
        tiny_paths: Paths) -> None:
    async def scenario(session: Session) -> None:
        await session.exec(f"printf 'guest own' > {GUEST_FILE}")
        with pytest.raises(ClipboardRefused, match="off"):
            await copy_in(session, "host secret")
        with pytest.raises(ClipboardRefused):
            await copy_out(session)
        assert await guest_clipboard(session) == "guest own"

    in_session(tiny_paths, ClipboardPolicy.OFF, scenario)


def test_guest_text_is_cleaned_and_lies_are_refused(tiny_paths: Paths) -> None:
    async def scenario(session: Session) -> None:
        await session.exec(rf"printf 'ok\033[201~\000 then\r\nmore' > {GUEST_FILE}")
        assert await copy_out(session) == "ok[201~ then\r\nmore"
        await session.exec(rf"printf '\377\376 not utf-8' > {GUEST_FILE}")
        with pytest.raises(GuestError, match="UTF-8"):
            await copy_out(session)
        await session.exec(f"head -c 1048577 /dev/zero | tr '\\0' a > {GUEST_FILE}")
        with pytest.raises(GuestError, match="limit"):
            await copy_out(session)

    in_session(tiny_paths, ClipboardPolicy.BOTH, scenario)


def test_a_stalled_guest_clipboard_gives_an_error_not_a_hang(
        tiny_paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clipboard, "TIMEOUT_S", 2.0)

    async def scenario(session: Session) -> float:
        await session.exec("printf '#!/bin/sh\\nsleep 600\\n' > /usr/bin/blankslate-clipboard")
        t0 = time.monotonic()
        with pytest.raises(GuestError, match="did not finish"):
            await copy_out(session)
        elapsed = time.monotonic() - t0
        assert (await session.exec("echo alive")).stdout == b"alive\n"  # agent still fine
        return elapsed

    assert in_session(tiny_paths, ClipboardPolicy.BOTH, scenario) < 10


def test_cli_copies_in_and_out_per_policy(tiny_paths: Paths) -> None:
    for policy in ("both", "host-to-guest"):
        proc = run_cli("context", "create", f"c-{policy}", "--image", "tiny",
                       "--network", "none", "--clipboard", policy)
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("run", "c-both", "--headless", "--json", "--clipboard-in", TEXT,
                   "--clipboard-out")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["clipboard"] == TEXT
    proc = run_cli("run", "c-host-to-guest", "--headless", "--clipboard-out")
    assert proc.returncode == 2
    assert "does not allow copying from the guest" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- no VM needed


def test_policy_is_stored_in_the_profile_with_host_to_guest_by_default(paths: Paths) -> None:
    store = ContextStore(paths)
    store.create(Profile(name="plain"))
    store.create(Profile(name="open", clipboard=ClipboardPolicy.BOTH))
    assert store.get("plain").profile.clipboard is ClipboardPolicy.HOST_TO_GUEST
    assert store.get("open").profile.clipboard is ClipboardPolicy.BOTH
    assert b'clipboard = "both"' in (paths.contexts_config / "open.toml").read_bytes()


def test_an_image_without_clipboard_is_refused_with_a_clear_message() -> None:
    recipe = Recipe(name="bare", append="", memory_mib=64, ready_command="true")
    why = clipboard.refusal(recipe, ClipboardPolicy.BOTH, to_guest=True)
    assert why == "the 'bare' image has no clipboard"
    with pytest.raises(ClipboardRefused, match="has no clipboard"):
        asyncio.run(copy_to_guest(None, recipe, ClipboardPolicy.BOTH, "x"))  # type: ignore[arg-type]


def test_control_characters_are_removed_but_tabs_and_newlines_stay() -> None:
    assert clean_text("a\x00b\x1b[31mc\x7f\x9bd\te\r\nf") == "ab[31mcd\te\r\nf"

"""Files in and out of a session through the guest agent (real QEMU, tiny guest)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli
from test_agent import FakeAgent, answer, connect_fake

from sandbox_app.core.contexts import ContextStore
from sandbox_app.core.errors import GuestError
from sandbox_app.core.guest import GuestFile, sanitize_name, save_to_host, send_to_guest
from sandbox_app.core.session import Session
from sandbox_app.core.storage import Paths

MAKE_FILES = (
    "mkdir -p /root/Downloads && cd /root/Downloads && "
    "head -c 52428800 /dev/urandom > big.bin && "
    "printf 'x' > '..hidden' && printf 'ctl' > \"$(printf 'a\\033[31mred\\nb')\" && "
    "printf 'long' > \"$(printf 'L%.0s' $(seq 1 250)).txt\" && "
    "ln -s /etc/passwd link && mkfifo fifo && sha256sum big.bin | cut -c1-64"
)


def test_downloads_are_saved_byte_identical_with_safe_names(tiny_context: str,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "saved"
    out.mkdir()
    (out / "big.bin").write_bytes(b"existing, must not be overwritten")
    proc = run_cli("run", tiny_context, "--headless", "--json", "--save-downloads", str(out),
                   "--exec", MAKE_FILES, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    guest_sum = report["exec"][0]["stdout"].strip()
    names = sorted(p.name for p in out.iterdir())
    assert (out / "big.bin").read_bytes() == b"existing, must not be overwritten"
    copied = out / "big (1).bin"
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == guest_sum
    assert "link" not in names and "fifo" not in names  # symlinks and fifos refused
    for name in names:
        assert "/" not in name and not name.startswith(".")
        assert all(ord(c) >= 0x20 for c in name)
        assert len(name.encode()) <= 200
    assert (out / "hidden").read_bytes() == b"x"
    assert len(report["saved"]) == 4


def test_a_host_file_is_put_into_the_guest(tiny_context: str, tmp_path: Path) -> None:
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(3_000_000))
    proc = run_cli("run", tiny_context, "--headless", "--json", "--put", str(src),
                   "--exec", "sha256sum /root/Downloads/payload.bin | cut -c1-64")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["put"] == ["/root/Downloads/payload.bin"]
    assert report["exec"][0]["stdout"].strip() == hashlib.sha256(src.read_bytes()).hexdigest()


def test_hostile_names_are_sanitized() -> None:
    assert sanitize_name("../../x") == "_.._x"
    assert sanitize_name("..") == "download"
    assert sanitize_name("a\x1b[31mb\nc") == "a[31mbc"
    assert len(sanitize_name("y" * 500 + ".pdf").encode()) <= 200
    assert sanitize_name("y" * 500 + ".pdf").endswith(".pdf")


def test_a_file_sent_in_never_follows_a_link_planted_in_the_guest(tiny_context: str,
                                                                  tiny_paths: Paths,
                                                                  tmp_path: Path) -> None:
    """The guest user plants Downloads/NAME -> a file of root's: the host file does not
    overwrite it (the agent writes as root and follows links)."""
    src = tmp_path / "note.txt"
    src.write_bytes(b"from the host")

    async def scenario() -> None:
        session = await Session.start(tiny_paths, ContextStore(tiny_paths).get(tiny_context))
        try:
            agent = session.agent
            assert agent is not None
            plant = await agent.shell(
                "mkdir -p /root/Downloads && printf precious > /root/victim && "
                "ln -s /root/victim /root/Downloads/note.txt")
            assert plant.exit_code == 0
            with pytest.raises(GuestError, match=r"could not put note\.txt"):
                await send_to_guest(agent, src, "/root/Downloads")
            check = await agent.shell("cat /root/victim; echo; "
                                      "ls /var/tmp /tmp | grep -c blankslate")
            assert check.stdout.split() == [b"precious", b"0"]
            # A plain name still goes in, byte for byte.
            (tmp_path / "other.txt").write_bytes(b"second")
            assert await send_to_guest(agent, tmp_path / "other.txt",
                                       "/root/Downloads") == "/root/Downloads/other.txt"
            got = await agent.shell("cat /root/Downloads/other.txt")
            assert got.stdout == b"second"
        finally:
            await session.discard()

    asyncio.run(scenario())


def test_saving_never_erases_a_host_file_it_did_not_create(tmp_path: Path) -> None:
    """A ``.NAME.part`` already in the target folder is someone else's: it survives, even
    when the copy fails."""
    target = tmp_path / "saved"
    target.mkdir()
    theirs = target / ".report.pdf.part"
    theirs.write_bytes(b"not ours")

    async def guest(msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        if msg["execute"] == "guest-exec":  # the regular-file check passes
            writer.write(answer(msg, {"pid": 7}))
        elif msg["execute"] == "guest-exec-status":
            writer.write(answer(msg, {"exited": True, "exitcode": 0}))
        else:  # then the copy fails, after the temp file was made
            writer.write(json.dumps({"error": {"desc": "gone"}, "id": msg["id"]}).encode()
                         + b"\n")

    async def scenario() -> None:
        server, agent = await connect_fake(tmp_path, FakeAgent(guest))
        async with server, agent:
            with pytest.raises((GuestError, OSError)):  # GuestError "gone", in fact
                await save_to_host(agent, "/root/Downloads", GuestFile("report.pdf", 10),
                                   target)

    asyncio.run(scenario())
    assert theirs.read_bytes() == b"not ours"
    assert sorted(p.name for p in target.iterdir()) == [".report.pdf.part"]

"""Files in and out of a session through the guest agent (real QEMU, tiny guest)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from helpers import run_cli

from sandbox_app.core.guest import sanitize_name

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

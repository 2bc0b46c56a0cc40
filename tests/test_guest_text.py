"""Guest text shown on the host carries no terminal control (core.guest.text)."""

from __future__ import annotations

import json

from helpers import run_cli

from sandbox_app.core.guest.text import guest_detail, terminal_safe

OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # would set the host clipboard


def test_escape_sequences_are_removed_whole() -> None:
    assert terminal_safe(f"a{OSC52}b") == "ab"
    assert terminal_safe("a\x1b]52;c;ZZZ\x1b\\b") == "ab"  # OSC ended by ST
    assert terminal_safe("\x1b[31mred\x1b[0m \x1b[2J\x1b[?1049h") == "red "
    assert terminal_safe("x\x9b31my\x9d0;title\x9cz") == "xyz"  # 8-bit CSI and OSC
    assert terminal_safe("a\x1bPdcs data\x1b\\b\x1b(Bc\x1bcd") == "abcd"
    assert terminal_safe("cut \x1b]0;title") == "cut "  # unterminated: gone to the end


def test_controls_bidi_and_zero_width_are_removed_newlines_and_tabs_kept() -> None:
    assert terminal_safe("ok\r\x08\x07\x00\x7f\x85 done\n\tnext") == "ok done\n\tnext"
    assert terminal_safe("abc\u202edcba\u202c \u2066x\u2069") == "abcdcba x"
    assert terminal_safe("pa\u200bss\u200c\u200d\u2060\ufeffword") == "password"
    assert terminal_safe("héllo wörld ✓ 日本") == "héllo wörld ✓ 日本"


def test_guest_detail_is_one_safe_line_keeping_the_end() -> None:
    assert guest_detail(b"line 1\nerror:\x1b[31m bad\x1b[0m\r\n") == "line 1 error: bad"
    assert guest_detail("x" * 300 + "END", 10) == "…xxxxxxEND"


def test_exec_output_reaches_the_terminal_without_escapes(tiny_context: str) -> None:
    script = ("printf 'out\\033]52;c;cHduZWQ=\\007put\\342\\200\\256\\n'; "
              "printf 'err\\033[2J\\033]0;t\\007or\\n' >&2")
    plain = run_cli("run", tiny_context, "--headless", "--exec", script, timeout=300)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == "output\n"
    assert "error\n" in plain.stderr and "\x1b" not in plain.stderr
    # --json keeps the bytes as they were (it is data for a program, not a terminal).
    raw = run_cli("run", tiny_context, "--headless", "--json", "--exec", script, timeout=300)
    assert "\x1b]52;" in json.loads(raw.stdout)["exec"][0]["stdout"]

"""One broken file breaks only its own context, and no file content gives a traceback."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import run_cli

from sandbox_app.core.contexts import Manifest, Profile
from sandbox_app.core.errors import BlankSlateError
from sandbox_app.core.images import Recipe

VALID_MANIFEST = {
    "image": "tiny", "snapshot": "abc-1",
    "layers": [{"file": "session-1.qcow2", "key": "k"}],
    "state": {"file": "state-1.enc", "bytes": 10, "ram": "ram-1.enc", "ram_bytes": 5},
    "generation": 1, "kept_at": 1.0,
}
VALID_RECIPE = {
    "name": "tiny", "append": "quiet", "memory_mib": 256, "ready_command": "true", "cpus": 1,
    "display": {"width": 1024, "height": 768}, "open_url_command": [],
    "loading_color": "#ffffff", "downloads_dir": "/root", "clipboard_set_command": [],
    "clipboard_get_command": [], "network_command": "",
}
ODD_VALUES = [None, True, -1, 2**80, 1e308, float("inf"), "", "abc", "../../etc/passwd",
              [], [1], {}, {"file": 1}, "x" * 10000]


def _mutations(valid: dict[str, object], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    text = json.dumps(valid).encode()
    out = [text[:n] for n in range(0, len(text), 7)]  # every truncation
    for key in valid:
        for value in ODD_VALUES:
            try:
                out.append(json.dumps({**valid, key: value}).encode())
            except ValueError:  # inf is not JSON: write it the way Python would
                out.append(json.dumps({**valid, key: value}, allow_nan=True).encode())
    out += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) for _ in range(200)]
    out += [b"[]", b"null", b"1", b'"x"', b"{" * 5000]
    return out


def test_manifest_reader_gives_a_manifest_or_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "current.json"
    for data in _mutations(VALID_MANIFEST, 1):
        path.write_bytes(data)
        try:
            m = Manifest.load(path, "tiny")
        except BlankSlateError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            continue
        assert all("/" not in f for f in m.referenced_files())


def test_recipe_reader_gives_a_recipe_or_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "recipe.json"
    for data in _mutations(VALID_RECIPE, 2):
        path.write_bytes(data)
        try:
            Recipe.load(path)
        except BlankSlateError as exc:
            assert "\n" not in str(exc)


@pytest.mark.parametrize("line", [
    "memory_mib = [1]", "memory_mib = inf", "memory_mib = nan", "created_at = [1]",
    "created_at = 1e400", "color = 5", "dns = {a = 1}", "network = []", "image = []",
    "search = 3", "memory_mib = 99999999999999999999", "[x", "\x00", "on_exit = 'nope'",
])
def test_profile_reader_gives_a_profile_or_a_one_line_error(line: str) -> None:
    try:
        Profile.from_toml("p", f"{line}\n".encode())
    except BlankSlateError as exc:
        assert "\n" not in str(exc)


def test_a_corrupt_context_is_listed_broken_and_the_others_work(home: Path) -> None:
    assert run_cli("context", "list").returncode == 0  # makes personal and work
    manifest = home / "data" / "contexts" / "personal" / "current.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text('{"image": "tiny", "layers": [')  # truncated
    (home / "config" / "contexts" / "work.toml").write_text("memory_mib = inf\n")
    run_cli("context", "create", "fine", "--image", "tiny")
    for args in (["context", "list"], ["image", "list"]):
        proc = run_cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
    listed = json.loads(run_cli("context", "list", "--json").stdout)
    by_name = {r["name"]: r for r in listed}
    assert str(manifest) in by_name["personal"]["broken"]
    assert "work.toml" in by_name["work"]["broken"]
    assert "broken" not in by_name["fine"] and by_name["fine"]["image"] == "tiny"
    check = run_cli("context", "check", "personal")
    assert check.returncode != 0 and str(manifest) in check.stderr
    assert len(check.stderr.strip().splitlines()) <= 2 and "Traceback" not in check.stderr
    for name in ("personal", "work"):
        proc = run_cli("context", "remove", name)
        assert proc.returncode == 0, proc.stderr
    names = [r["name"] for r in json.loads(run_cli("context", "list", "--json").stdout)]
    assert names == ["fine"]

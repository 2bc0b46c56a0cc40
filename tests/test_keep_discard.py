"""Keep makes a session part of its context; discard leaves no trace (real QEMU, TCG)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from helpers import exec_stdout, private_tiny, run_cli, run_session

from sandbox_app.core.storage import Paths

_run, _out = run_session, exec_stdout


def test_kept_file_is_there_next_time_and_discarded_one_is_not(tiny_context: str) -> None:
    _run(tiny_context, "echo one > /root/kept; sync", on_exit="keep")
    _run(tiny_context, "echo two > /root/discarded; sync", on_exit="discard")
    r = _run(tiny_context, "cat /root/kept; ls /root")
    assert _out(r).startswith("one\n")
    assert "discarded" not in _out(r)


def test_keep_restores_the_saved_ram_not_a_reboot(tiny_context: str) -> None:
    r1 = _run(tiny_context, "cut -d. -f1 /proc/uptime", on_exit="keep")
    r2 = _run(tiny_context, "cut -d. -f1 /proc/uptime")
    assert r2["restore_s"] is not None
    # The guest continues where it was kept: its uptime did not start again from zero.
    assert int(_out(r2)) >= int(_out(r1))


def test_two_keeps_stack_layers(tiny_context: str, tiny_paths: Paths) -> None:
    _run(tiny_context, "echo a > /root/a; sync", on_exit="keep")
    _run(tiny_context, "echo b > /root/b; sync", on_exit="keep")
    assert _out(_run(tiny_context, "cat /root/a /root/b")) == "a\nb\n"
    manifest = json.loads((tiny_paths.contexts_data / tiny_context / "current.json").read_text())
    assert manifest["generation"] == 2
    names = {p.name for p in (tiny_paths.contexts_data / tiny_context).iterdir()}
    # Only what the manifest references is left (and the persistent folder): the first
    # keep's RAM state was erased.
    state = manifest["state"]
    referenced = {layer["file"] for layer in manifest["layers"]} | {state["file"], state["ram"]}
    assert names == referenced | {"current.json", "persistent.qcow2", "persistent.key"}


def _grep_tree(root: Path, needle: bytes) -> list[Path]:
    hits = []
    # os.walk, not rglob: other processes' folders in /tmp may vanish while it walks.
    for top, _dirs, names in os.walk(root):
        for p in (Path(top) / n for n in names):
            try:
                if p.is_symlink() or not p.is_file():
                    continue
                with open(p, "rb") as f:
                    while chunk := f.read(8 << 20):
                        if needle in chunk:
                            hits.append(p)
                            break
            except OSError:
                continue
    return hits


def test_marker_is_never_on_disk_in_plaintext(tiny_context: str, tiny_paths: Paths) -> None:
    marker = secrets.token_hex(16)
    # Written in the guest, synced to its disk, kept in its RAM page cache too.
    _run(tiny_context, f"echo {marker} > /root/marker; sync", on_exit="keep")
    _run(tiny_context, f"echo {marker} > /root/marker2; sync", on_exit="discard")
    home = tiny_paths.data.parent
    roots = [home / "data" / "contexts", home / "state", home / "run", Path("/tmp")]
    for root in roots:
        assert _grep_tree(root, marker.encode()) == [], root
    assert marker in _out(_run(tiny_context, "cat /root/marker"))


def test_passphrase_protects_the_context(tiny_context: str) -> None:
    proc = run_cli("context", "passphrase", tiny_context, "--passphrase-stdin",
                   input="correct horse\n")
    assert proc.returncode == 0, proc.stderr
    _run(tiny_context, "echo secret > /root/s; sync", on_exit="keep",
         stdin="correct horse\n", extra=("--passphrase-stdin",))
    wrong = run_cli("run", tiny_context, "--headless", "--passphrase-stdin", "--exec", "true",
                    input="wrong\n")
    assert wrong.returncode == 7
    assert "Traceback" not in wrong.stderr and "passphrase" in wrong.stderr
    r = _run(tiny_context, "cat /root/s", stdin="correct horse\n", extra=("--passphrase-stdin",))
    assert _out(r) == "secret\n"


def test_wrong_passphrase_changes_nothing(tiny_context: str, tiny_paths: Paths) -> None:
    assert run_cli("context", "passphrase", tiny_context, "--passphrase-stdin",
                   input="pw1\n").returncode == 0
    keys = tiny_paths.data / "keys"
    before = {p.name: p.read_bytes() for p in keys.iterdir()}
    proc = run_cli("context", "passphrase", tiny_context, "--passphrase-stdin",
                   input="nope\npw2\n")
    assert proc.returncode == 7
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == before


def test_discard_reports_and_wipes_what_was_written(tiny_context: str) -> None:
    r = _run(tiny_context, "head -c 3000000 /dev/urandom > /root/x; sync")
    assert int(r["changed_bytes"]) >= 3_000_000  # type: ignore[call-overload]
    assert int(r["wiped_bytes"]) >= int(r["changed_bytes"])  # type: ignore[call-overload]
    assert os.environ["BLANKSLATE_HOME"]


def test_a_rebuilt_snapshot_point_never_breaks_kept_contexts(tiny_context: str,
                                                             tiny_paths: Paths) -> None:
    private_tiny(tiny_paths)
    _run(tiny_context, "echo mine > /root/mine; sync", on_exit="keep")
    kept_on = json.loads((tiny_paths.contexts_data / tiny_context / "current.json").read_text()
                         )["snapshot"]
    points = len(list(tiny_paths.images.glob("tiny/snapshots/*/golden.qcow2")))
    state = tiny_paths.images / "tiny" / "snapshots" / kept_on / "state.bin"
    state.chmod(0o644)
    state.write_bytes(b"corrupt")
    assert run_cli("context", "create", "fresh", "--image", "tiny").returncode == 0
    # The rebuilt point (a new directory) restores, and holds nothing of t1's.
    assert _out(_run("fresh", "ls /root/mine || echo absent")) == "absent\n"
    assert len(list(tiny_paths.images.glob("tiny/snapshots/*/golden.qcow2"))) == points + 1
    assert _out(_run(tiny_context, "cat /root/mine")) == "mine\n"
    assert run_cli("context", "check", tiny_context).returncode == 0

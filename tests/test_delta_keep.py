"""Delta keeps: a kept context stores its device state and only the RAM pages that differ
from the golden ram.img, encrypted and bound to their context (real QEMU, TCG, tiny image)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import exec_stdout, run_cli, run_session

from sandbox_app.core.storage import Paths

MiB = 1 << 20
# RAM the guest fills with random bytes (a tmpfs survives in RAM only: a delta must carry it).
FILL = ("mkdir -p /run/blob && "
        "(grep -q ' /run/blob ' /proc/mounts || mount -t tmpfs blob /run/blob) && "
        "dd if=/dev/urandom of=/run/blob/{name} bs=1M count={mib} 2>/dev/null && "
        "md5sum /run/blob/{name} | cut -d' ' -f1")


_run, _out = run_session, exec_stdout


def _state(paths: Paths, context: str) -> dict[str, object]:
    manifest = json.loads((paths.contexts_data / context / "current.json").read_text())
    state: dict[str, object] = manifest["state"]
    return state


def test_keep_stores_the_changed_ram_only_and_restores_it_exactly(
        tiny_context: str, tiny_paths: Paths) -> None:
    small = _run(tiny_context, "echo hi > /root/hi; sync", on_exit="keep")
    assert small["restore_s"] is not None
    state = _state(tiny_paths, tiny_context)
    assert state["ram"], "a delta keep: device state and RAM pages apart"
    assert int(state["ram_bytes"]) < 32 * MiB, "a small session keeps a small delta"
    # 48 MiB of random RAM content: the delta grows by that much, and comes back intact.
    want = _out(_run(tiny_context, FILL.format(name="a", mib=48), on_exit="keep")).strip()
    state = _state(tiny_paths, tiny_context)
    assert 48 * MiB <= int(state["ram_bytes"]) < 48 * MiB + 32 * MiB
    assert _out(_run(tiny_context, "md5sum /run/blob/a | cut -d' ' -f1")).strip() == want


def test_three_keeps_and_a_compaction_still_restore_ram_and_disk(
        tiny_context: str, tiny_paths: Paths) -> None:
    sums = []
    for i in range(4):  # the fourth keep makes four layers: compaction folds them to three
        r = _run(tiny_context, f"echo {i} > /root/f{i}; sync", FILL.format(name=f"b{i}", mib=4),
                 on_exit="keep")
        sums.append(_out(r, 1).strip())
    manifest = json.loads((tiny_paths.contexts_data / tiny_context / "current.json").read_text())
    assert len(manifest["layers"]) <= 3, "compacted"
    r = _run(tiny_context, "cat /root/f0 /root/f1 /root/f2 /root/f3",
             "for i in 0 1 2 3; do md5sum /run/blob/b$i | cut -d' ' -f1; done")
    assert _out(r) == "0\n1\n2\n3\n"
    assert _out(r, 1).split() == sums


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_tampered_swapped_or_missing_delta_is_refused(
        tiny_context: str, tiny_paths: Paths) -> None:
    _run(tiny_context, "echo hi > /root/hi", on_exit="keep")
    state = _state(tiny_paths, tiny_context)
    ram = tiny_paths.contexts_data / tiny_context / str(state["ram"])
    devices = tiny_paths.contexts_data / tiny_context / str(state["file"])
    original = ram.read_bytes()

    def refused(what: str) -> None:
        proc = run_cli("run", tiny_context, "--headless", "--json", "--exec", "true")
        assert proc.returncode == 5, (what, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()[-1]) < 200

    _corrupt(ram)
    refused("a flipped bit")
    ram.write_bytes(devices.read_bytes())  # a valid file of this context, in another's place
    refused("a swapped file")
    ram.unlink()
    refused("a missing delta")
    ram.write_bytes(original)
    assert _out(_run(tiny_context, "cat /root/hi")) == "hi\n", "intact again: restores"


def test_an_older_state_renamed_over_the_newer_one_is_refused(
        tiny_context: str, tiny_paths: Paths) -> None:
    data = tiny_paths.contexts_data / tiny_context
    _run(tiny_context, "echo old > /root/v", on_exit="keep")
    first = _state(tiny_paths, tiny_context)
    older = {k: (data / str(first[k])).read_bytes() for k in ("file", "ram")}
    _run(tiny_context, "echo new > /root/v", on_exit="keep")
    second = _state(tiny_paths, tiny_context)
    newer = {k: (data / str(second[k])).read_bytes() for k in ("file", "ram")}
    for k in ("file", "ram"):  # a rollback: the old bytes under the new names
        (data / str(second[k])).write_bytes(older[k])
    proc = run_cli("run", tiny_context, "--headless", "--json", "--exec", "cat /root/v")
    assert proc.returncode == 5 and "Traceback" not in proc.stderr, proc.stderr
    for k in ("file", "ram"):
        (data / str(second[k])).write_bytes(newer[k])
    assert _out(_run(tiny_context, "cat /root/v")) == "new\n"


def test_a_cold_booted_session_keeps_a_bound_full_state(
        tiny_context: str, tiny_paths: Paths) -> None:
    _run(tiny_context, "echo cold > /root/c", on_exit="keep", extra=("--cold",))
    state = _state(tiny_paths, tiny_context)
    assert state.get("bound") is True and "ram" not in state, "a full migration stream"
    assert _out(_run(tiny_context, "cat /root/c")) == "cold\n"

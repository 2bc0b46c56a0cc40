"""Delta keeps: a kept context stores its device state and only the RAM pages that differ
from the golden ram.img, encrypted and bound to their context (real QEMU, TCG, tiny image)."""

from __future__ import annotations

import json
import mmap
import os
import struct
import zlib
from pathlib import Path

from helpers import exec_stdout, run_cli, run_session

from sandbox_app.core.storage import Paths
from sandbox_app.core.vm import guestram

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


PAGE = guestram.PAGE


def _private_map(path: Path) -> mmap.mmap:
    """A private (copy-on-write) mapping of ``path`` in this process, as QEMU maps ram.img."""
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE)


def _kinds(delta: bytes) -> list[int]:
    """The record kinds of a delta (format 2), in order."""
    out, pos = [], len(guestram.MAGIC)
    while True:
        kind, _first, count = struct.unpack_from("<BQI", delta, pos)
        out.append(kind)
        pos += 13
        if kind == guestram.END:
            return out
        if kind == guestram.RAW:
            pos += count * PAGE
        elif kind == guestram.COPY:
            pos += 8
        else:
            pos += 4 + struct.unpack_from("<I", delta, pos)[0]


def test_a_delta_stores_copies_and_compressible_pages_small_and_restores_exactly(
        tmp_path: Path) -> None:
    """The delta format on a private mapping of this very process (no VM needed)."""
    ram = tmp_path / "ram.img"
    ram.write_bytes(b"".join(os.urandom(PAGE // 2) + bytes(PAGE // 2) for _ in range(64)))
    m = _private_map(ram)
    noise = os.urandom(4 * PAGE)
    m[3 * PAGE:7 * PAGE] = noise  # random: stored as it is
    m[10 * PAGE + 100:10 * PAGE + 108] = b"counter!"  # a small change: XOR + zlib
    m[20 * PAGE:22 * PAGE] = bytes(2 * PAGE)  # zeroed pages: the second one a copy
    m[30 * PAGE:34 * PAGE] = noise  # the same content as pages 3-6: a copy
    m[40 * PAGE:41 * PAGE] = m[40 * PAGE:41 * PAGE]  # written, content unchanged: not stored
    want = bytes(m)
    delta = b"".join(guestram.read_delta(os.getpid(), ram))
    m.close()
    kinds = _kinds(delta)
    assert guestram.COPY in kinds and guestram.XZLIB in kinds and guestram.RAW in kinds
    assert len(delta) < 6 * PAGE, "4 random pages, the rest copies or compressed"
    fresh = _private_map(ram)
    try:
        assert guestram.write_delta(os.getpid(), ram, [delta[:5], delta[5:]]) == 4 + 1 + 2 + 4
        assert bytes(fresh) == want
    finally:
        fresh.close()


def test_a_delta_of_the_first_format_still_restores(tmp_path: Path) -> None:
    ram = tmp_path / "ram.img"
    ram.write_bytes(bytes(8 * PAGE))
    page = os.urandom(PAGE)
    old = struct.pack("<QI", 5, 1) + page + struct.pack("<QI", 8, 0)
    fresh = _private_map(ram)
    try:
        assert guestram.write_delta(os.getpid(), ram, [old]) == 1
        assert bytes(fresh) == bytes(5 * PAGE) + page + bytes(2 * PAGE)
    finally:
        fresh.close()


def test_a_device_state_is_stored_packed_and_one_kept_before_loads_as_it_is() -> None:
    state = b"QEVM" + bytes(1 << 20) + b"tail"
    packed = guestram.pack_devices(state)
    assert len(packed) < 8192 and guestram.unpack_devices([packed[:3], packed[3:]]) == state
    assert guestram.unpack_devices([state]) == state
    assert zlib.decompress(packed[len(guestram.DEVICES_MAGIC):]) == state

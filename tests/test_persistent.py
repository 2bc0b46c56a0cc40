"""The persistent folder: a per-context encrypted volume, apart from the throwaway sessions
(real QEMU under TCG, the tiny guest: ``/root/Persistent``)."""

from __future__ import annotations

import asyncio
import json

from helpers import run_cli

from sandbox_app.core.contexts import ContextStore, Profile
from sandbox_app.core.session import ContextRunner
from sandbox_app.core.storage import Paths

FOLDER = "/root/Persistent"


def _run(context: str, *cmds: str, on_exit: str = "discard") -> list[str]:
    args = ["run", context, "--headless", "--json", "--on-exit", on_exit]
    for c in cmds:
        args += ["--exec", c]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    return [e["stdout"] for e in json.loads(proc.stdout)["exec"]]


def test_the_folder_survives_discard_keep_and_quick_reset(tiny_context: str,
                                                          tiny_paths: Paths) -> None:
    marker = "persistent-marker-5d1c"
    _run(tiny_context, f"echo {marker} > {FOLDER}/note; echo session > /root/s")
    # Discarded: the session's own file is gone, the folder's stays.
    assert _run(tiny_context, f"cat {FOLDER}/note; test -e /root/s || echo gone") == [
        f"{marker}\ngone\n"]
    # Kept (a keep unmounts it first): both come back, and the folder is writable again.
    _run(tiny_context, f"echo kept > /root/k; echo v2 >> {FOLDER}/note", on_exit="keep")
    assert _run(tiny_context, f"cat /root/k {FOLDER}/note; echo v3 >> {FOLDER}/note") == [
        f"kept\n{marker}\nv2\n"]
    # The discarded session's write to the folder stays; the kept state is where it was.
    assert _run(tiny_context, f"cat {FOLDER}/note") == [f"{marker}\nv2\nv3\n"]

    async def quick_reset() -> str:
        runner = ContextRunner(tiny_paths, tiny_context)
        try:
            s = await runner.start()
            await s.exec(f"echo v4 >> {FOLDER}/note")
            s = await runner.quick_reset()  # the old VM is killed at once
            return (await s.exec(f"cat {FOLDER}/note")).stdout.decode()
        finally:
            await runner.close()

    assert asyncio.run(quick_reset()) == f"{marker}\nv2\nv3\nv4\n"
    # Never in plaintext on the host: not in the volume, nor anywhere in the data dir.
    for p in tiny_paths.data.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert marker.encode() not in p.read_bytes(), p


def test_two_contexts_have_separate_folders_and_a_full_one_is_enospc(
        tiny_paths: Paths) -> None:
    store = ContextStore(tiny_paths)
    store.create(Profile(name="a", image="tiny", data_mib=32))
    store.create(Profile(name="b", image="tiny", data_mib=32))
    _run("a", f"echo in-a > {FOLDER}/x")
    assert _run("b", f"ls {FOLDER}") == ["lost+found\n"]
    # Filling the folder is an error in the guest; the session runs on.
    out = _run("a", f"dd if=/dev/zero of={FOLDER}/fill bs=1M count=64 2>&1 | head -1; "
                    "echo still-running", f"cat {FOLDER}/x")
    assert "No space left on device" in out[0] and "still-running" in out[0]
    assert out[1] == "in-a\n"


def test_no_folder_when_the_context_has_none(tiny_paths: Paths) -> None:
    ContextStore(tiny_paths).create(Profile(name="bare", image="tiny", data_mib=0))
    assert _run("bare", f"test -e {FOLDER} && echo there || echo none") == ["none\n"]
    assert not (tiny_paths.contexts_data / "bare" / "persistent.qcow2").exists()


def test_downloads_can_land_in_the_persistent_folder(tiny_paths: Paths) -> None:
    ContextStore(tiny_paths).create(Profile(name="d", image="tiny", data_mib=32))
    downloads = "/root/Downloads"
    _run("d", f"echo thrown > {downloads}/a")
    assert _run("d", f"ls {downloads}") == [""]  # default: the session's, discarded
    set_ = run_cli("context", "set", "d", "--downloads", "persistent")
    assert set_.returncode == 0, set_.stderr
    _run("d", f"echo kept-download > {downloads}/b")
    # Discarded, yet there: in Downloads and under Persistent/Downloads.
    assert _run("d", f"cat {downloads}/b {FOLDER}/Downloads/b") == [
        "kept-download\nkept-download\n"]
    # A keep unmounts both; the kept context mounts them again.
    _run("d", "echo k > /root/k", on_exit="keep")
    assert _run("d", f"cat /root/k {downloads}/b; grep -c ' {downloads} ' /proc/mounts") == [
        "k\nkept-download\n1\n"]
    # Back to the session: the folder's downloads stay in Persistent/Downloads only.
    assert run_cli("context", "set", "d", "--downloads", "session").returncode == 0
    assert _run("d", f"ls {downloads}; cat {FOLDER}/Downloads/b") == ["kept-download\n"]
    bare = run_cli("context", "create", "bare", "--image", "tiny", "--data-size", "0",
                   "--downloads", "persistent")
    assert bare.returncode == 2 and "persistent folder" in bare.stderr

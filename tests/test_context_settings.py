"""A context's settings change after creation: ``ContextStore.update`` and ``rename_context``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import private_tiny, run_cli

from sandbox_app.core.contexts import (
    Context,
    ContextStore,
    ExitDefault,
    Journal,
    KeptLayer,
    KeptState,
    Manifest,
    Network,
    Profile,
    SessionRecord,
    Vault,
    context_lock,
    key_store,
    process_start_time,
    rename_context,
)
from sandbox_app.core.contexts import rename as rename_module
from sandbox_app.core.errors import AuthError, NotFoundError, UsageError
from sandbox_app.core.guest import ClipboardPolicy
from sandbox_app.core.storage import Paths

# ---------------------------------------------------------------------------- update


def test_update_changes_the_settings_and_keeps_the_creation_time(paths: Paths) -> None:
    store = ContextStore(paths)
    created = store.create(Profile(name="c", image="tiny")).profile.created_at
    store.update(Profile(name="c", image="tiny", color="#abcdef", memory_mib=512,
                         network=Network.INTERNET_LAN, on_exit=ExitDefault.KEEP,
                         clipboard=ClipboardPolicy.BOTH, dns=("9.9.9.9",), created_at=1.0))
    p = store.get("c").profile
    assert (p.color, p.memory_mib, p.network, p.on_exit, p.clipboard, p.dns) == (
        "#abcdef", 512, Network.INTERNET_LAN, ExitDefault.KEEP, ClipboardPolicy.BOTH,
        ("9.9.9.9",))
    assert p.created_at == created


def test_update_refuses_what_cannot_change_or_is_invalid(paths: Paths) -> None:
    store = ContextStore(paths)
    store.create(Profile(name="c", image="tiny"))
    with pytest.raises(UsageError, match="image cannot be changed"):
        store.update(Profile(name="c", image="browser"))
    with pytest.raises(UsageError, match="size cannot"):
        store.update(Profile(name="c", image="tiny", data_mib=64))
    with pytest.raises(UsageError, match="color"):
        store.update(Profile(name="c", image="tiny", color="red"))
    with pytest.raises(UsageError, match="dns"):
        store.update(Profile(name="c", image="tiny", dns=("not-an-ip",)))
    with pytest.raises(NotFoundError):
        store.update(Profile(name="nope", image="tiny"))
    assert store.get("c").profile.color == "#2e86de"  # nothing written


# ---------------------------------------------------------------------------- rename


def test_rename_of_a_never_started_context_moves_its_profile_and_folder(paths: Paths) -> None:
    store = ContextStore(paths)
    store.create(Profile(name="old", image="tiny", color="#123456"))
    rename_context(paths, "old", "new")
    assert [c.name for c in store.list()] == ["new"]
    assert store.get("new").profile.color == "#123456"
    assert (paths.contexts_data / "new").is_dir() and not (paths.contexts_data / "old").exists()
    assert b'name = "new"' in (paths.contexts_config / "new.toml").read_bytes()


def _kept_context(paths: Paths, name: str, passphrase: str | None = None) -> dict[str, bytes]:
    """A context as a keep leaves it: a layer with a wrapped key, a bound RAM state, a
    persistent folder with a wrapped key. Returns the secrets to find again."""
    store = ContextStore(paths)
    ctx = store.create(Profile(name=name, image="tiny"))
    vault = Vault.open(paths, ctx, passphrase)
    d = ctx.data_dir
    (d / "layer-1.qcow2").write_bytes(b"layer bytes")
    (d / "persistent.qcow2").write_bytes(b"volume bytes")
    state = KeptState("state-1.bin", 0, bound=True)
    label = state.label(name, 1, "snap", "state-1.bin")
    size = vault.save([b"the saved ", b"RAM"], d / "state-1.bin", label=label)
    secrets = {"layer": b"layer-secret", "volume": b"volume-secret", "state": b"the saved RAM"}
    Manifest(image="tiny", snapshot="snap",
             layers=(KeptLayer("layer-1.qcow2", vault.wrap("layer-1.qcow2", secrets["layer"])),),
             state=KeptState("state-1.bin", size, bound=True), generation=1,
             kept_at=123.0).save(ctx.manifest_path)
    (d / "persistent.key").write_text(vault.wrap("persistent.qcow2", secrets["volume"]))
    (d / "garbage.tmp").write_bytes(b"left over")
    return secrets


def _opened_as(paths: Paths, name: str, passphrase: str | None = None) -> dict[str, bytes]:
    ctx = ContextStore(paths).get(name)
    vault = Vault.open(paths, ctx, passphrase)
    m = ctx.manifest()
    assert m.state is not None
    label = m.state.label(name, m.generation, m.snapshot, m.state.file)
    return {"layer": vault.unwrap(m.layers[0].file, m.layers[0].key),
            "volume": vault.unwrap("persistent.qcow2", ctx.volume_key_path.read_text()),
            "state": b"".join(vault.load(ctx.data_dir / m.state.file, label=label))}


def test_rename_binds_the_layer_keys_states_and_volume_key_to_the_new_name(
        paths: Paths) -> None:
    secrets = _kept_context(paths, "old")
    layer = paths.contexts_data / "old" / "layer-1.qcow2"
    inode = layer.stat().st_ino
    rename_context(paths, "old", "new")
    assert _opened_as(paths, "new") == secrets
    new_dir = paths.contexts_data / "new"
    assert (new_dir / "layer-1.qcow2").stat().st_ino == inode  # moved, not copied
    assert not (new_dir / "garbage.tmp").exists()
    assert not (paths.contexts_data / "old").exists()
    assert not key_store(paths).exists("old") and key_store(paths).exists("new")
    assert ContextStore(paths).get("new").manifest().kept_at == 123.0
    assert not list(paths.contexts_data.glob(".rename-*"))


def test_rename_of_a_protected_context_needs_its_passphrase_and_keeps_it(
        paths: Paths) -> None:
    secrets = _kept_context(paths, "old", "hunter2")
    with pytest.raises(AuthError):
        rename_context(paths, "old", "new")
    with pytest.raises(AuthError):
        rename_context(paths, "old", "new", "wrong")
    assert [c.name for c in ContextStore(paths).list()] == ["old"]
    assert not key_store(paths).exists("new")
    rename_context(paths, "old", "new", "hunter2")
    assert key_store(paths).is_protected("new")
    assert _opened_as(paths, "new", "hunter2") == secrets


def test_rename_refuses_an_existing_name_a_held_lock_and_a_running_session(
        paths: Paths) -> None:
    store = ContextStore(paths)
    store.create(Profile(name="a", image="tiny"))
    store.create(Profile(name="b", image="tiny"))
    with pytest.raises(UsageError, match="already exists"):
        rename_context(paths, "a", "b")
    with pytest.raises(UsageError, match="invalid context name"):
        rename_context(paths, "a", "Not Valid")
    with pytest.raises(NotFoundError):
        rename_context(paths, "nope", "c")
    with context_lock(paths, "a"), pytest.raises(UsageError, match="busy"):
        rename_context(paths, "a", "c")
    start = process_start_time(os.getpid())
    assert start is not None
    Journal(paths).write(SessionRecord("s1", "a", os.getpid(), start, ""))
    with pytest.raises(UsageError, match="stop it first"):
        rename_context(paths, "a", "c")
    Journal(paths).remove("s1")
    rename_context(paths, "a", "c")
    assert sorted(c.name for c in store.list()) == ["b", "c"]


def test_a_rename_killed_after_its_commit_is_finished_by_recovery(
        paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = _kept_context(paths, "old")
    calls: list[bool] = []
    real = rename_module.finish_renames

    def killed_at_commit(p: Paths, *, locked: bool = False) -> list[str]:
        calls.append(locked)
        if locked:  # the roll-forward right after the commit: "killed"
            raise KeyboardInterrupt
        return real(p, locked=locked)

    monkeypatch.setattr(rename_module, "finish_renames", killed_at_commit)
    with pytest.raises(KeyboardInterrupt):
        rename_context(paths, "old", "new")
    intent = json.loads((paths.contexts_data / ".rename-new.json").read_text())
    assert intent["old"] == "old" and "layer-1.qcow2" in intent["moves"]
    Journal(paths).recover()  # the next blankslate command
    assert [c.name for c in ContextStore(paths).list()] == ["new"]
    assert _opened_as(paths, "new") == secrets


def test_a_rename_killed_before_its_commit_leaves_the_context_as_it_was(
        paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = _kept_context(paths, "old")

    def no_disk(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rename_module, "atomic_write_json", no_disk)  # the commit fails
    with pytest.raises(OSError):
        rename_context(paths, "old", "new")
    monkeypatch.undo()
    Journal(paths).recover()
    assert [c.name for c in ContextStore(paths).list()] == ["old"]
    assert _opened_as(paths, "old") == secrets
    assert not key_store(paths).exists("new")  # recovery dropped the key made for it
    rename_context(paths, "old", "new")  # and the next try clears the prepared folder
    assert _opened_as(paths, "new") == secrets


def test_cli_set_and_rename(paths: Paths) -> None:
    assert run_cli("context", "create", "a", "--image", "tiny").returncode == 0
    ok = run_cli("context", "set", "a", "--color", "#102030", "--network", "none",
                 "--dns", "9.9.9.9,2620:fe::fe", "--on-exit", "discard", "--memory", "300")
    assert ok.returncode == 0, ok.stderr
    p = ContextStore(paths).get("a").profile
    assert (p.color, p.network.value, p.dns, p.on_exit.value, p.memory_mib) == \
        ("#102030", "none", ("9.9.9.9", "2620:fe::fe"), "discard", 300)
    assert p.clipboard == ClipboardPolicy.HOST_TO_GUEST  # not given: unchanged
    assert run_cli("context", "set", "a", "--memory", "0").returncode == 0
    assert ContextStore(paths).get("a").profile.memory_mib is None
    for args, code, words in ((["a"], 2, "nothing to change"),
                              (["a", "--color", "red"], 2, "invalid color"),
                              (["a", "--dns", "not-an-address"], 2, "dns"),
                              (["nope", "--color", "#000000"], 3, "unknown context")):
        bad = run_cli("context", "set", *args)
        assert (bad.returncode, bad.stderr.count("\n")) == (code, 1), bad.stderr
        assert words in bad.stderr.lower()
    assert ContextStore(paths).get("a").profile.color == "#102030"
    assert run_cli("context", "rename", "a", "b").returncode == 0
    assert [c.name for c in ContextStore(paths).list() if c.name in "ab"] == ["b"]
    taken = run_cli("context", "rename", "b", "personal")
    assert taken.returncode == 2 and "already exists" in taken.stderr
    unknown = run_cli("context", "create", "c", "--image", "nonexistent")
    assert unknown.returncode == 3 and "unknown image 'nonexistent'" in unknown.stderr
    assert not (paths.contexts_config / "c.toml").exists()


# ---------------------------------------------------------------------------- real QEMU


def test_a_renamed_context_starts_where_it_was_kept(tiny_context: str,
                                                    tiny_paths: Paths) -> None:
    private_tiny(tiny_paths)  # a new memory size makes a new snapshot point
    kept = run_cli("run", tiny_context, "--headless", "--on-exit", "keep",
                   "--exec", "echo kept > /root/k; sync")
    assert kept.returncode == 0, kept.stderr
    renamed = run_cli("context", "rename", tiny_context, "renamed")
    assert renamed.returncode == 0, renamed.stderr
    assert run_cli("context", "set", "renamed", "--memory", "200").returncode == 0
    proc = run_cli("run", "renamed", "--headless", "--json", "--exec", "cat /root/k",
                   "--exec", "grep MemTotal /proc/meminfo")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["exec"][0]["stdout"] == "kept\n"
    # The new memory size is the next session's (a cold boot of the kept disk: the saved
    # RAM state was for the old size).
    assert 140 * 1024 < int(report["exec"][1]["stdout"].split()[1]) <= 200 * 1024
    assert not Path(tiny_paths.contexts_data / tiny_context).exists()
    assert isinstance(ContextStore(tiny_paths).get("renamed"), Context)

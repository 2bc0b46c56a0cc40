"""The runner keeps every context's next overlay ready: Start only launches and restores."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from sandbox_app.core.contexts import (
    ContextStore,
    Journal,
    Manifest,
    Profile,
    SessionRecord,
    key_store,
    process_start_time,
    try_context_lock,
)
from sandbox_app.core.errors import AuthError, DiskFullError
from sandbox_app.core.images import ImageStore
from sandbox_app.core.session import (
    AppSettings,
    ContextRunner,
    RunState,
    Session,
    SessionState,
)
from sandbox_app.core.storage import Paths


async def _spare(runner: ContextRunner) -> Path:
    """Wait for the runner's spare overlay (made in the background) and return its path."""
    for _ in range(600):
        if runner._spare is not None and runner._spare_task is None:
            return runner._spare.path
        await asyncio.sleep(0.05)
    raise AssertionError("no spare overlay was made")


def test_spare_is_ready_before_start_survives_discard_and_is_remade_after_keep(
        tiny_paths: Paths, tiny_context: str) -> None:
    async def scenario() -> None:
        store = ImageStore(tiny_paths)
        image = store.get("tiny")
        await store.ensure_snapshot(image, store.accel_for(image))
        runner = ContextRunner(tiny_paths, tiny_context)
        # Stopped: the spare is made ahead of the first Start, and the Start uses it.
        runner.prepare_spare_soon()
        first = await _spare(runner)
        session = await runner.start()
        assert session.overlay is not None and session.overlay.path == first
        # While it runs, the next one is made; a discard keeps it (same chain).
        second = await _spare(runner)
        assert second != first
        await runner.stop(keep=False)
        assert not first.exists(), "the discarded session's overlay is erased"
        assert await _spare(runner) == second and second.exists()
        # A keep changes the chain: the old spare is erased, a new one sits on the kept layer.
        session = await runner.start()
        assert session.overlay is not None and session.overlay.path == second
        third = await _spare(runner)
        await runner.stop(keep=True)
        assert not third.exists(), "a spare on the old chain is erased by the keep"
        fourth = await _spare(runner)
        top = ContextStore(tiny_paths).get(tiny_context).manifest().layers[-1].file
        assert runner._spare is not None and runner._spare.backing.name == top == second.name
        # Closing (quitting the app) erases it and its journal record.
        await runner.close()
        assert not fourth.exists()
        assert not [r for r in Journal(tiny_paths).records() if r.context == tiny_context]

    asyncio.run(scenario())


def test_no_spare_is_made_before_the_snapshot_point_exists(
        tiny_paths: Paths) -> None:
    contexts = ContextStore(tiny_paths)
    for name in ("a1", "a2"):
        # No snapshot point exists for this memory size yet.
        contexts.create(Profile(name=name, image="tiny", memory_mib=200))

    async def scenario() -> None:
        lock = asyncio.Lock()
        runners = [ContextRunner(tiny_paths, n, prepare_lock=lock) for n in ("a1", "a2")]
        for r in runners:
            r.prepare_spare_soon()
        await asyncio.gather(*(r._spare_task for r in runners if r._spare_task))
        assert not any(r.spare_ready for r in runners), "no spare without a snapshot point"
        assert not list((tiny_paths.data / "contexts").glob("*/session-*.qcow2"))

    asyncio.run(scenario())


def test_standby_qemu_waits_for_the_start_and_never_outlives_the_runner(
        tiny_paths: Paths, tiny_context: str) -> None:
    (tiny_paths.config / "app.toml").write_text('standby = "on"\n')

    async def standby_ready(runner: ContextRunner) -> Session:
        for _ in range(600):
            if runner._standby is not None:
                return runner._standby
            await asyncio.sleep(0.05)
        raise AssertionError("no standby QEMU was launched")

    async def scenario() -> None:
        store = ImageStore(tiny_paths)
        image = store.get("tiny")
        await store.ensure_snapshot(image, store.accel_for(image))
        runner = ContextRunner(tiny_paths, tiny_context)
        runner.set_standby(True)
        standby = await standby_ready(runner)
        assert standby.machine is not None and standby.machine.launched
        status = await standby.machine.execute("query-status")
        assert status["status"] == "inmigrate", "paused, waiting for its state"
        session = await runner.start()
        assert session is standby and session.state is SessionState.RUNNING
        assert (await session.exec("echo up")).stdout == b"up\n"
        await runner.stop(keep=False)
        second = await standby_ready(runner)
        assert second is not standby
        # A keep makes the standby stale (it sits on the old chain): a new one is made.
        session = await runner.start()
        assert session is second
        await runner.stop(keep=True)
        third = await standby_ready(runner)
        assert third.manifest.layers, "the new standby sits on the kept layer"
        pid = third.machine.pid if third.machine else None
        runner.set_standby(False)  # e.g. standby turned off, or another context used
        await runner.close()
        assert pid is not None and not Path(f"/proc/{pid}").exists()
        assert not [r for r in Journal(tiny_paths).records() if r.context == tiny_context]
        assert not list(tiny_paths.runtime.glob("s-*"))

    asyncio.run(scenario())


def test_a_failed_keep_leaves_the_session_running_or_discarded_never_hidden(
        tiny_paths: Paths, tiny_context: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a persistent folder the session opens the context's key only to keep.
    store = ContextStore(tiny_paths)
    profile = store.get(tiny_context).profile
    profile.data_mib = 0
    store.save(profile)

    async def scenario() -> None:
        runner = ContextRunner(tiny_paths, tiny_context)
        session = await runner.start()
        # A passphrase set from the CLI meanwhile: the keep cannot open the vault.
        key_store(tiny_paths).create(tiny_context, "set meanwhile")
        with pytest.raises(AuthError):
            await runner.stop(keep=True)
        assert runner.state is RunState.RUNNING and runner.session is session
        assert (await session.exec("echo still here")).stdout == b"still here\n"
        # A failure after the save (the disk fills as the manifest is switched): discarded.
        runner.passphrase = session._passphrase = "set meanwhile"
        session.vault = None

        def full(*_args: object) -> None:
            raise DiskFullError("disk full")

        monkeypatch.setattr(Manifest, "save", full)
        overlay = session.overlay.path if session.overlay else None
        pid = session.machine.pid if session.machine else None
        with pytest.raises(DiskFullError):
            await runner.stop(keep=True)
        assert runner.state is RunState.STOPPED and runner.session is None
        assert pid is not None and not Path(f"/proc/{pid}").exists()
        assert overlay is not None and not overlay.exists()
        assert not [r for r in Journal(tiny_paths).records() if r.context == tiny_context]
        await runner.close()

    asyncio.run(scenario())


def test_two_keeps_of_one_context_never_both_commit(tiny_paths: Paths, tiny_context: str) -> None:
    async def scenario() -> None:
        ctx = ContextStore(tiny_paths).get(tiny_context)
        a = await Session.start(tiny_paths, ctx)
        b = await Session.start(tiny_paths, ctx)
        # One persistent folder, one writer: the second session runs without it, and says so.
        assert any("persistent folder is open in another session" in w for w in b.warnings)
        await a.exec("echo a > /root/who; sync")
        await b.exec("echo b > /root/who; sync")
        results = await asyncio.gather(a.keep(), b.keep(), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1 and "kept by another session" in str(failed[0])
        loser = a if a.state is SessionState.RUNNING else b
        assert loser.state is SessionState.RUNNING, "the loser runs on, to be discarded"
        await loser.discard()
        manifest = ctx.manifest()
        assert manifest.generation == 1
        assert all((ctx.data_dir / f).exists() for f in manifest.referenced_files())
        again = await Session.start(tiny_paths, ctx)
        winner = "b" if loser is a else "a"
        assert (await again.exec("cat /root/who")).stdout.decode().strip() == winner
        await again.discard()

    asyncio.run(scenario())


def test_clean_up_spares_what_a_keep_is_writing(tiny_paths: Paths, tiny_context: str) -> None:
    ctx = ContextStore(tiny_paths).get(tiny_context)
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(tiny_paths)
    state = ctx.data_dir / "state-123.enc"
    journal.write(SessionRecord(id="k1", context=tiny_context, owner_pid=os.getpid(),
                                owner_start=process_start_time(os.getpid()) or 0,
                                runtime_dir="", files=[str(state)]))
    partial = ctx.data_dir / ".state-123.enc.tmp"  # what encrypt_stream writes through
    partial.write_bytes(b"x" * 4096)
    stray = ctx.data_dir / "state-old.enc"
    stray.write_bytes(b"y")
    with try_context_lock(tiny_paths, tiny_context) as locked:  # a keep holds the lock
        assert locked
        journal.recover()
        assert stray.exists(), "clean-up waits while the context is locked"
    journal.recover()
    assert partial.exists() and not stray.exists()
    journal.remove("k1")


def test_no_copy_of_the_disk_keys_is_kept_once_qemu_has_them(
        tiny_paths: Paths, tiny_context: str) -> None:
    async def scenario() -> None:
        session = await Session.start(tiny_paths, ContextStore(tiny_paths).get(tiny_context))
        try:
            assert session.machine is not None
            assert all(layer.secret is None for layer in session.machine.spec.disk)
        finally:
            await session.discard()
        assert session.overlay is None or session.overlay.key.dropped

    asyncio.run(scenario())


def test_the_passphrase_is_forgotten_after_the_idle_time(tiny_paths: Paths) -> None:
    runner = ContextRunner(tiny_paths, "p")
    runner.passphrase = "secret"
    used = time.monotonic()
    assert not runner.expire_passphrase(60, now=used + 30)
    assert runner.passphrase == "secret"
    assert runner.expire_passphrase(60, now=used + 61)
    assert runner.passphrase is None


def test_app_settings_are_read_and_a_broken_file_means_defaults(tiny_paths: Paths) -> None:
    settings = tiny_paths.config / "app.toml"
    settings.write_text('standby = "off"\npassphrase_idle_minutes = 5\n')
    assert AppSettings.load(tiny_paths) == AppSettings(standby="off", passphrase_idle_minutes=5)
    for broken in ('standby = "sometimes"\n', "passphrase_idle_minutes = -1\n", "[", "\x00"):
        settings.write_text(broken)
        assert AppSettings.load(tiny_paths) == AppSettings()

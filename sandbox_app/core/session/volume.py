"""A context's persistent folder: data that lives apart from the throwaway sessions.

One LUKS-encrypted qcow2 per context (``persistent.qcow2``, sparse, ``Profile.data_mib``
big) under a random key of its own, wrapped by the context key (``persistent.key``). Every
session of the context gets it — golden or kept, after every restore and quick reset — as
its second disk (``QemuMachine.attach_data``), and the guest mounts it (``mount_script``).
Discard, quick reset and keep never touch it; a keep unmounts it first, so a kept RAM state
never holds stale caches of a volume that later sessions change.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import uuid
from pathlib import Path, PurePosixPath

from ..contexts import (
    Context,
    Journal,
    SessionRecord,
    Vault,
    async_context_lock,
    process_start_time,
)
from ..contexts.context import VOLUME
from ..errors import BlankSlateError
from ..storage import Paths, SessionKey, atomic_write_bytes, private_dir
from ..vm import Layer, create_volume
from ..vm.argv import DATA_SERIAL

MiB = 1 << 20


def volume_tmp_path(context: Context) -> Path:
    """Where a new volume is made (journal it first: a crash leaves nothing behind)."""
    return context.volume_path.with_name(f".{VOLUME}.tmp")


async def ensure_volume(context: Context, vault: Vault, workdir: Path) -> Layer | None:
    """The context's volume with its key (created, with an empty file system, the first
    time, through ``workdir``: see ``create_volume``); None if the context has none."""
    if context.profile.data_mib == 0:
        return None
    path, key_file = context.volume_path, context.volume_key_path
    if not path.exists():
        async with async_context_lock(context.paths, context.name):  # one maker at a time
            if not path.exists():
                return await _create(context, vault, workdir)
    if not key_file.exists():
        raise BlankSlateError(f"context '{context.name}': the persistent folder's key is "
                              f"missing ({key_file})")
    token = await asyncio.to_thread(key_file.read_text)
    return Layer(path, vault.unwrap(VOLUME, token.strip()))


async def _create(context: Context, vault: Vault, workdir: Path) -> Layer:
    path, key_file = context.volume_path, context.volume_key_path
    key = SessionKey()
    tmp = volume_tmp_path(context)
    await create_volume(tmp, context.profile.data_mib * MiB, key.secret_text(), workdir)
    # The key first: a crash before the rename leaves no volume, and the next start makes one.
    atomic_write_bytes(key_file, vault.wrap(VOLUME, key.secret_text()).encode())
    os.replace(tmp, path)
    return Layer(path, key.secret_text())


async def prepare_volume(paths: Paths, context: Context, passphrase: str | None) -> None:
    """Make the context's volume ahead of its first session (the app does it in the
    background: a LUKS format takes ~2 s), journaled like a prepared overlay."""
    if context.profile.data_mib == 0 or context.volume_path.exists():
        return
    vault = await asyncio.to_thread(Vault.open, paths, context, passphrase)
    journal = Journal(paths)
    rec_id = f"prep-vol-{uuid.uuid4().hex[:8]}"
    workdir = private_dir(paths.runtime / rec_id)
    journal.write(SessionRecord(
        id=rec_id, context=context.name, owner_pid=os.getpid(),
        owner_start=process_start_time(os.getpid()) or 0, runtime_dir=str(workdir),
        files=[str(volume_tmp_path(context))]))
    try:
        await ensure_volume(context, vault, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        journal.remove(rec_id)


def mount_script(folder: str, downloads: str | None = None) -> str:
    """Shell for the guest: mount the data disk (ext4, made on the host) at ``folder``,
    owned by the user whose home it is in; with ``downloads``, bind its ``Downloads``
    subfolder there (the context's downloads land in the persistent folder). Idempotent (a
    resumed session has it mounted)."""
    d = shlex.quote(folder)
    owner = f'"$(stat -c %u:%g {shlex.quote(str(PurePosixPath(folder).parent))})"'
    script = f"""set -e
if ! grep -q " {d} " /proc/mounts; then
dev=
for b in /sys/block/vd*; do
    [ "$(cat "$b/serial" 2>/dev/null)" = {DATA_SERIAL} ] && dev=/dev/${{b##*/}}
done
[ -n "$dev" ] || {{ echo "no persistent disk"; exit 1; }}
i=0
while [ "$(cat /sys/block/${{dev##*/}}/size)" = 0 ]; do  # the new size arrives by interrupt
    i=$((i+1)); [ $i -lt 100 ] || {{ echo "the persistent disk has no size"; exit 1; }}
    sleep 0.05
done
blockdev --flushbufs "$dev" 2>/dev/null || busybox blockdev --flushbufs "$dev" || true
magic=$(dd if="$dev" bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')
[ "$magic" = 53ef ] || {{ echo "the persistent disk holds no file system"; exit 1; }}
mkdir -p {d}
# sync: a session can end at any moment (discard and quick reset kill the VM at once), and
# what was written here must be on the volume by then.
mount -t ext4 -o sync,noatime,nodev,nosuid "$dev" {d}
chown {owner} {d}
fi
"""
    if downloads:
        inner, dl = shlex.quote(f"{folder}/Downloads"), shlex.quote(downloads)
        script += f"""if ! grep -q " {dl} " /proc/mounts; then
mkdir -p {inner} {dl}
chown {owner} {inner}
mount --bind {inner} {dl}
fi
"""
    return script


def unmount_script(folder: str, downloads: str | None = None) -> str:
    """Shell for the guest before a keep: write out and unmount (fails while in use)."""
    d = shlex.quote(folder)
    first = ""
    if downloads:
        dl = shlex.quote(downloads)
        first = (f"grep -q ' {downloads} ' /proc/mounts && {{ umount {dl} || {{ echo 'a program "
                 f"still uses the downloads folder {downloads}'; exit 1; }}; }}; ")
    return (f"sync; {first}grep -q ' {folder} ' /proc/mounts || exit 0; "
            f"umount {d} || {{ echo 'a program still uses the persistent folder {folder}'; "
            "exit 1; }; "
            "for b in /sys/block/vd*; do [ \"$(cat $b/serial 2>/dev/null)\" = "
            f"{DATA_SERIAL} ] && (blockdev --flushbufs /dev/${{b##*/}} 2>/dev/null || "
            "busybox blockdev --flushbufs /dev/${b##*/}); done; true")

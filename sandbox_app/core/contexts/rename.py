"""Renaming a context: its files are bound to its name, so they are bound anew, then moved.

A context's layer keys are wrapped with its name as associated data and its saved states are
encrypted bound to a label holding its name (``vault``), and its key file may be wrapped by a
passphrase for that name. Renaming therefore:

1. prepares, in a hidden folder ``data/contexts/.rename-NEW`` that nothing else touches, the
   context's manifests with re-wrapped layer keys, its saved states re-encrypted for the new
   name, and its persistent folder's key re-wrapped, and stores the same context key under
   the new name (same protection: passphrase, keyring or file). A crash here leaves the
   context as it was (the next rename clears the folder; recovery drops the extra key);
2. commits by writing ``data/contexts/.rename-NEW.json`` (old name, new name, the layer
   files to move);
3. rolls forward (``journal.finish_renames``, which recovery also runs after a crash): moves
   the layers into the prepared folder, securely erases what is left of the old one, makes
   the folder the new context's and the profile the new name's, forgets the old key.

Refused while a session of the context runs (in this or any process) or its lock is held.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..errors import UsageError
from ..storage import (
    ContextKey,
    IterReader,
    Paths,
    atomic_write_bytes,
    atomic_write_json,
    decrypt_chunks,
    encrypt_stream,
    erase_tree,
    private_dir,
    validate_name,
)
from .context import (
    CURRENT,
    SUSPENDED,
    VOLUME,
    VOLUME_KEY,
    Context,
    ContextStore,
    KeptLayer,
    Manifest,
    Profile,
)
from .journal import Journal, finish_renames, rename_intent_path, rename_stage_path
from .lock import try_context_lock
from .vault import Vault, key_store


def rename_context(paths: Paths, old: str, new: str, passphrase: str | None = None) -> None:
    """Rename context ``old`` to ``new`` (``blankslate context rename``, the GUI's
    Settings…). A context protected by a passphrase needs it (AuthError without)."""
    validate_name(new, "context name")
    finish_renames(paths)  # one that crashed after its commit ends first
    if rename_intent_path(paths, new).exists():
        raise UsageError(f"a rename to '{new}' is under way: try again in a moment")
    store = ContextStore(paths)
    ctx = store.get(old)
    if new == old:
        return
    if (paths.contexts_config / f"{new}.toml").exists() or (paths.contexts_data / new).exists():
        raise UsageError(f"context '{new}' already exists")
    keys = key_store(paths)
    if keys.exists(new):
        raise UsageError(f"a key for '{new}' is left over from a removed context: run any "
                         "blankslate command once to clean it up, then rename")
    with try_context_lock(paths, old) as got_old, try_context_lock(paths, new) as got_new:
        if not (got_old and got_new):
            raise UsageError(f"context '{old}' is busy (a session starts or keeps, or it is "
                             "being removed): try again in a moment")
        if any(r.context == old and r.owner_alive() for r in Journal(paths).records()):
            raise UsageError(f"context '{old}' is in use (a running session, or the app "
                             "holds its next session ready): stop it first")
        stage = rename_stage_path(paths, new)
        erase_tree(stage)  # a rename that crashed before its commit
        private_dir(stage)
        moves = _prepare(paths, ctx, new, stage, passphrase)
        atomic_write_json(rename_intent_path(paths, new),
                          {"old": old, "new": new, "moves": sorted(moves)})  # the commit
        finish_renames(paths, locked=True)


def _prepare(paths: Paths, ctx: Context, new: str, stage: Path,
             passphrase: str | None) -> set[str]:
    """Write the re-bound files into ``stage``; store the key under ``new``. Returns the
    files to move as they are (layers and the persistent folder: bound by their keys only)."""
    src = ctx.data_dir
    keys = key_store(paths)
    manifests = [n for n in (CURRENT, SUSPENDED) if (src / n).exists()]
    moves = {f for n in manifests for f in Manifest.load(src / n, "").referenced_files()}
    if (src / VOLUME).exists():
        moves.add(VOLUME)
    if not keys.exists(ctx.name):  # never started: nothing is bound to its name yet
        for n in [*manifests, VOLUME_KEY]:
            if (src / n).exists():
                atomic_write_bytes(stage / n, (src / n).read_bytes())
        return moves
    protected = keys.is_protected(ctx.name)
    key = keys.unlock(ctx.name, passphrase)
    try:
        before = Vault(ctx, key)
        after = Vault(Context(paths, Profile(name=new, image=ctx.profile.image)), key)
        for n in manifests:
            m = Manifest.load(src / n, ctx.profile.image)
            layers = tuple(KeptLayer(e.file, after.wrap(e.file, before.unwrap(e.file, e.key)))
                           for e in m.layers)
            if m.state is not None:
                for f in (m.state.file, m.state.ram):
                    if f is None or not (src / f).exists():
                        continue
                    moves.discard(f)  # re-encrypted, not moved
                    pieces = decrypt_chunks(
                        key, src / f, m.state.label(ctx.name, m.generation, m.snapshot, f))
                    encrypt_stream(key, io.BufferedReader(IterReader(pieces)), stage / f,
                                   label=m.state.label(new, m.generation, m.snapshot, f))
            Manifest(m.image, m.snapshot, layers, m.state, m.generation, m.kept_at).save(
                stage / n)
        if (src / VOLUME_KEY).exists():
            token = (src / VOLUME_KEY).read_text().strip()
            atomic_write_bytes(stage / VOLUME_KEY,
                               after.wrap(VOLUME, before.unwrap(VOLUME, token)).encode())
        keys.create(new, passphrase if protected else None,
                    key=ContextKey(key.material())).drop()
    finally:
        key.drop()
    return moves

"""Session keys (memory only) and per-context keys wrapped by passphrase, keyring or file."""

from __future__ import annotations

import base64
import json
import os
import pickle
from pathlib import Path

import keyring
import pytest
from helpers import FakeKeyring
from keyring.backends import fail

from sandbox_app.core.errors import AuthError, BlankSlateError, NotFoundError, UsageError
from sandbox_app.core.storage import ContextKey, KeyStorage, KeyStore, SessionKey
from sandbox_app.core.storage import keys as keys_module

FAST = 2**10  # scrypt cost for tests; the default is checked once


def _store(tmp_path: Path, keyring_backend: object = None) -> KeyStore:
    return KeyStore(tmp_path, use_keyring=False, scrypt_n=FAST, keyring_backend=keyring_backend)


def _forms(raw: bytes) -> list[bytes]:
    """The ways a key could show up in a file."""
    return [raw, base64.b64encode(raw), raw.hex().encode()]


def test_session_key_is_32_random_bytes_given_to_qemu_as_base64_text() -> None:
    a, b = SessionKey(), SessionKey()
    assert len(a.material()) == 32 and a.material() != b.material()
    assert base64.b64decode(a.secret_text()) == a.material()


def test_keys_never_show_in_repr_or_pickle() -> None:
    for key in (SessionKey(), ContextKey()):
        raw = key.material()
        text = repr(key) + str(key)
        assert all(form.decode("latin-1") not in text for form in _forms(raw))
        assert text.startswith(f"<{type(key).__name__}")
        with pytest.raises(TypeError):
            pickle.dumps(key)


def test_drop_zeroes_the_buffer_and_forbids_further_use() -> None:
    key = SessionKey()
    buf = key._buf  # the one buffer we control
    key.drop()
    assert buf == bytearray(32) and key.dropped
    with pytest.raises(BlankSlateError, match="dropped"):
        key.secret_text()


def test_passphrase_wraps_the_key_in_a_0600_file(tmp_path: Path) -> None:
    store = _store(tmp_path)
    raw = store.create("work", "s3cret").material()
    assert store.is_protected("work") and store.storage("work") is KeyStorage.PASSPHRASE
    assert store.last_warning is None
    assert store.unlock("work", "s3cret").material() == raw
    files = list(tmp_path.iterdir())
    assert [p.name for p in files] == ["work.key.json"]
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o600
        assert not any(form in p.read_bytes() for form in _forms(raw))


def test_default_scrypt_cost(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, use_keyring=False)
    store.create("c", "pw")
    rec = json.loads((tmp_path / "c.key.json").read_text())
    assert rec["scrypt"] == {"n": 2**17, "r": 8, "p": 1}


def test_wrong_passphrase_is_an_auth_error(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.create("work", "s3cret")
    with pytest.raises(AuthError, match=r"^wrong passphrase for context 'work'$"):
        store.unlock("work", "nope")
    with pytest.raises(AuthError, match="locked"):
        store.unlock("work", None)


def test_wrong_passphrase_changes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.create("c", "pw")
    before = (tmp_path / "c.key.json").read_bytes()
    with pytest.raises(AuthError):
        store.change_passphrase("c", "bad", "other")
    assert (tmp_path / "c.key.json").read_bytes() == before
    assert store.unlock("c", "pw")


def test_change_passphrase_keeps_the_key_and_erases_the_old_wrapping(tmp_path: Path) -> None:
    store = _store(tmp_path)
    raw = store.create("c", "old").material()
    old_file = tmp_path / "old-inode"
    os.link(tmp_path / "c.key.json", old_file)  # see what happens to the replaced file
    size = old_file.stat().st_size
    store.change_passphrase("c", "old", "new")
    assert store.unlock("c", "new").material() == raw
    with pytest.raises(AuthError):
        store.unlock("c", "old")
    assert old_file.read_bytes() == bytes(size)  # the old wrapped key was zeroed


def test_no_passphrase_no_keyring_falls_back_to_a_0600_file_with_a_warning(
        tmp_path: Path) -> None:
    store = _store(tmp_path)
    raw = store.create("c", "pw").material()
    store.change_passphrase("c", "pw", None)
    assert store.last_warning and "0600" in store.last_warning
    assert store.storage("c") is KeyStorage.FILE and not store.is_protected("c")
    assert store.unlock("c", None).material() == raw
    assert (tmp_path / "c.key.json").stat().st_mode & 0o777 == 0o600


def test_keyring_holds_the_key_when_available(tmp_path: Path) -> None:
    ring = FakeKeyring()
    store = _store(tmp_path, keyring_backend=ring)
    raw = store.create("c", None).material()
    assert store.storage("c") is KeyStorage.KEYRING and store.last_warning is None
    assert not any(form in (tmp_path / "c.key.json").read_bytes() for form in _forms(raw))
    assert store.unlock("c", None).material() == raw
    store.change_passphrase("c", None, "pw")  # moving to a passphrase leaves the keyring
    assert ring.items == {}
    assert store.unlock("c", "pw").material() == raw


def test_key_missing_from_keyring_is_an_auth_error(tmp_path: Path) -> None:
    ring = FakeKeyring()
    store = _store(tmp_path, keyring_backend=ring)
    store.create("c", None)
    ring.items.clear()
    with pytest.raises(AuthError, match="keyring"):
        store.unlock("c", None)


def test_use_keyring_false_never_asks_the_system_keyring(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom() -> object:
        raise AssertionError("the system keyring was consulted")

    monkeypatch.setattr(keyring, "get_keyring", boom)
    store = _store(tmp_path)
    store.create("c", None)
    assert store.storage("c") is KeyStorage.FILE


def test_fail_and_plaintext_keyrings_are_not_used() -> None:
    assert not keys_module._real_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    assert keys_module._real_keyring(FakeKeyring())


def test_create_refuses_to_replace_an_existing_key(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.create("c", "pw")
    with pytest.raises(UsageError, match="already has a key"):
        store.create("c", "other")


def test_remove_erases_the_key_file_and_keyring_entry(tmp_path: Path) -> None:
    ring = FakeKeyring()
    store = _store(tmp_path, keyring_backend=ring)
    store.create("a", None)
    store.create("b", "pw")
    store.remove("a")
    store.remove("b")
    assert ring.items == {} and list(tmp_path.iterdir()) == []
    with pytest.raises(NotFoundError):
        store.unlock("b", "pw")


def test_context_names_cannot_escape_the_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        _store(tmp_path / "keys").create("../evil", "pw")


def test_absurd_scrypt_parameters_are_rejected_not_run(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.create("c", "pw")
    path = tmp_path / "c.key.json"
    rec = json.loads(path.read_text())
    rec["scrypt"]["n"] = 2**30  # would need 1 TiB of memory
    path.write_text(json.dumps(rec))
    with pytest.raises(BlankSlateError, match="corrupt"):
        store.unlock("c", "pw")


def test_two_data_directories_never_share_a_keyring_entry(tmp_path: Path) -> None:
    ring = FakeKeyring()
    first = _store(tmp_path / "one", keyring_backend=ring)
    second = _store(tmp_path / "two", keyring_backend=ring)
    a = first.create("personal", None).material()
    b = second.create("personal", None).material()
    assert a != b and len(ring.items) == 2
    assert first.unlock("personal", None).material() == a
    assert second.unlock("personal", None).material() == b
    second.remove("personal")
    assert first.unlock("personal", None).material() == a, "removing one left the other"


def test_version_1_keyring_files_still_unlock(tmp_path: Path) -> None:
    ring = FakeKeyring()
    store = _store(tmp_path, keyring_backend=ring)
    raw = store.create("c", None).material()
    path = tmp_path / "c.key.json"
    rec = json.loads(path.read_text())
    (service, account), secret = next(iter(ring.items.items()))
    assert account == f"c:{rec['id']}"
    ring.items = {(service, "c"): secret}  # where version 1 kept it: under the bare name
    path.write_text(json.dumps({k: v for k, v in rec.items() if k != "id"} | {"version": 1}))
    assert store.unlock("c", None).material() == raw


def test_a_key_file_from_a_newer_version_is_refused_in_one_line(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.create("c", "pw")
    path = tmp_path / "c.key.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"version": 9}))
    with pytest.raises(BlankSlateError, match="version 9"):
        store.unlock("c", "pw")

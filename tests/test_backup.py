"""Backup and restore of contexts (``blankslate backup`` / ``restore``): a real SeaweedFS
through boto3, the directory target through the same code, the tiny guest under TCG."""

from __future__ import annotations

import json
import mmap
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_cli
from seaweed import S3Server, seaweedfs

from sandbox_app.core.backup import files as backup_files
from sandbox_app.core.backup.files import ZERO_BLOCK, ChunkFetcher, ChunkSender
from sandbox_app.core.backup.rampages import GROUP, to_groups, to_records
from sandbox_app.core.backup.repository import Repository
from sandbox_app.core.backup.target import BackupError, DirTarget
from sandbox_app.core.contexts import ContextStore, Profile
from sandbox_app.core.storage import Paths
from sandbox_app.core.vm import guestram

PASS = "correct horse battery staple\n"
MARKER = "BSMARK-7f3a9c1e"  # in the guest's disk
PMARKER = "BSPERS-51d0e8a2"  # in its persistent folder
NAME = "zebracontext"  # a name that never occurs by chance in ciphertext
MiB = 1 << 20
OBJECT_NAME = re.compile(r"config|data/[0-9a-f]{2}/[0-9a-f]{64}|snapshots/[0-9]{14}[0-9a-f]{8}")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


def _cli(*args: str, env: dict[str, str] | None = None, home: Path | None = None,
         passphrase: str = PASS) -> dict[str, object]:
    extra = dict(env or {})
    if home is not None:
        extra["BLANKSLATE_HOME"] = str(home)
    proc = run_cli(*args, "--passphrase-stdin", "--json", env=extra, input=passphrase)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout)
    return out


def _run(context: str, *cmds: str, on_exit: str = "discard",
         home: Path | None = None) -> list[str]:
    args = ["run", context, "--headless", "--json", "--on-exit", on_exit]
    for c in cmds:
        args += ["--exec", c]
    proc = run_cli(*args, env={"BLANKSLATE_HOME": str(home)} if home else None)
    assert proc.returncode == 0, proc.stderr
    return [e["stdout"] for e in json.loads(proc.stdout)["exec"]]


def _all_objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def test_seed_scenario_lose_the_laptop_lose_nothing(
        tiny_paths: Paths, s3: S3Server, tmp_path: Path) -> None:
    ContextStore(tiny_paths).create(Profile(name=NAME, image="tiny", color="#123456"))
    target = "s3://seed/laptop"
    _run(NAME, f"echo {MARKER} > /root/marker",
         f"mkdir -p /root/Persistent && echo {PMARKER} > /root/Persistent/pmark && sync",
         on_exit="keep")
    first = _cli("backup", NAME, "--to", target, env=s3.env())
    assert first["objects_sent"] and first["bytes_sent"]

    # A new laptop: an empty home, nothing but the backup and its passphrase.
    home_b = tmp_path / "laptop-b"
    restored = _cli("restore", "--from", target, env=s3.env(), home=home_b)
    assert restored["contexts"] == [NAME]
    assert _run(NAME, "cat /root/marker", "cat /root/Persistent/pmark",
                home=home_b) == [f"{MARKER}\n", f"{PMARKER}\n"]

    # A small keep later (1 MiB of new data), the next backup sends about what that keep
    # changed: the goal is at most 4 MiB.
    _run(NAME, "dd if=/dev/urandom of=/root/more bs=1M count=1 2>/dev/null && sync",
         on_exit="keep")
    second = _cli("backup", NAME, "--to", target, env=s3.env())
    sent = int(second["bytes_sent"])  # type: ignore[call-overload]
    assert MiB <= sent <= 4 * MiB, second
    # ... and that incremental backup restores where the second keep left off.
    home_c = tmp_path / "laptop-c"
    _cli("restore", "--from", target, env=s3.env(), home=home_c)
    assert _run(NAME, "cat /root/marker", "wc -c < /root/more",
                home=home_c) == [f"{MARKER}\n", f"{MiB}\n"]

    # A second context on the same image does not send the snapshot point again.
    ContextStore(tiny_paths).create(Profile(name="second", image="tiny"))
    _run("second", "echo two > /root/two", on_exit="keep")
    other = _cli("backup", "second", "--to", target, env=s3.env())
    own = sum(p.stat().st_size for p in (tiny_paths.contexts_data / "second").iterdir())
    assert int(other["bytes_sent"]) <= own + MiB, (other, own)  # type: ignore[call-overload]
    assert int(other["bytes_skipped"]) >= 64 * MiB  # type: ignore[call-overload]

    # The target sees opaque names and ciphertext only.
    objects = _all_objects(s3, "seed")
    assert all(OBJECT_NAME.fullmatch(k.removeprefix("laptop/")) for k in objects), list(objects)
    for key, body in objects.items():
        for secret in (MARKER, PMARKER, NAME, "second", "tiny", "golden", "current.json"):
            assert secret.encode() not in body, f"{secret} in {key}"


def test_restore_as_another_name_starts_where_it_was_kept(
        tiny_paths: Paths, tmp_path: Path) -> None:
    ContextStore(tiny_paths).create(Profile(name="orig", image="tiny"))
    _run("orig", f"echo {MARKER} > /root/marker", on_exit="keep")
    target = str(tmp_path / "usb")
    _cli("backup", "orig", "--to", target)
    home_b = tmp_path / "b"
    assert _cli("restore", "orig", "--from", target, "--as", "copy",
                home=home_b)["contexts"] == ["copy"]
    assert _run("copy", "cat /root/marker", home=home_b) == [f"{MARKER}\n"]


@pytest.fixture
def dir_backup(tiny_context: str, tmp_path: Path) -> Path:
    """A directory target holding a backup of a never-started tiny context."""
    target = tmp_path / "usb"
    _cli("backup", tiny_context, "--to", str(target))
    return target


def test_an_unchanged_context_sends_nothing_again(tiny_context: str, dir_backup: Path) -> None:
    again = _cli("backup", tiny_context, "--to", str(dir_backup))
    assert again["objects_sent"] == 0 and again["bytes_sent"] == 0
    listed = run_cli("backup", "list", "--from", str(dir_backup), "--passphrase-stdin",
                     "--json", input=PASS)
    assert [s["contexts"].keys() == {tiny_context}  # type: ignore[union-attr]
            for s in json.loads(listed.stdout)] == [True, True]


def test_check_reads_every_object_and_finds_corrupt_and_missing_ones(dir_backup: Path) -> None:
    ok = run_cli("backup", "check", "--from", str(dir_backup), "--passphrase-stdin", input=PASS)
    assert ok.returncode == 0, ok.stderr
    chunks = sorted((dir_backup / "data").rglob("*"))
    chunks = [c for c in chunks if c.is_file()]
    corrupt, missing = chunks[0], chunks[1]
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 1
    corrupt.write_bytes(bytes(data))
    missing.unlink()
    bad = run_cli("backup", "check", "--from", str(dir_backup), "--passphrase-stdin", input=PASS)
    assert bad.returncode == 9
    assert f"{corrupt.name} is corrupt" in bad.stderr
    assert f"{missing.name} is missing" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_an_interrupted_backup_resumes_without_resending(
        tiny_context: str, tmp_path: Path) -> None:
    target = tmp_path / "usb"
    _cli("backup", tiny_context, "--to", str(target))
    for snap in (target / "snapshots").iterdir():  # as if cut short before its index
        snap.unlink()
    stored = sum(p.stat().st_size for p in (target / "data").rglob("*") if p.is_file())
    again = _cli("backup", tiny_context, "--to", str(target))
    assert again["objects_sent"] == 0 and int(again["bytes_skipped"]) >= stored // 2  # type: ignore[call-overload]


@pytest.mark.parametrize(("args", "code", "text"), [
    (("restore", "--from", "{usb}"), 7, "wrong backup passphrase"),
    (("restore", "--from", "{missing}"), 9, "no backup at"),
    (("backup", "list", "--from", "s3://nobucket/x", "--s3-endpoint", "http://127.0.0.1:9"),
     9, "cannot reach the S3 endpoint"),
])
def test_user_errors_are_one_line(dir_backup: Path, tmp_path: Path, args: tuple[str, ...],
                                  code: int, text: str) -> None:
    argv = [a.format(usb=dir_backup, missing=tmp_path / "nothing") for a in args]
    proc = run_cli(*argv, "--passphrase-stdin", input="not the passphrase\n",
                   env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                        "AWS_MAX_ATTEMPTS": "1"})
    assert proc.returncode == code, proc.stderr
    assert text in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_key_or_passphrase_reaches_the_target_in_the_clear(dir_backup: Path) -> None:
    config = json.loads((dir_backup / "config").read_text())
    assert set(config) == {"format", "version", "kdf", "cipher", "id", "keys"}
    for path in dir_backup.rglob("*"):
        if path.is_file():
            assert PASS.strip().encode() not in path.read_bytes()
    assert oct(os.stat(dir_backup / "config").st_mode)[-3:] == "600"


def test_chunks_that_compress_are_stored_compressed_and_old_repositories_still_read(
        tmp_path: Path) -> None:
    target = DirTarget(tmp_path / "usb")
    repo = Repository.create(target, "pw", scrypt={"n": 2**10, "r": 8, "p": 1})
    sparse, noise = bytes(MiB // 2) + os.urandom(MiB // 2), os.urandom(MiB)
    sealed = {data: repo.seal_chunk(repo.chunk_id(data), data) for data in (sparse, noise)}
    assert len(sealed[sparse]) < MiB * 6 // 10, "the zeros compressed"
    assert len(sealed[noise]) <= MiB + 64, "random data as it is"
    for data, blob in sealed.items():
        assert repo.open_chunk(repo.chunk_id(data), blob) == data
    # A repository of the first version: chunks not packed, read and written as they were.
    config = json.loads(target.get("config"))
    target.put("config", json.dumps({**config, "version": 1}).encode())
    old = Repository.open(target, "pw")
    blob = old.seal_chunk(old.chunk_id(sparse), sparse)
    assert len(blob) > MiB and old.open_chunk(old.chunk_id(sparse), blob) == sparse


def test_a_sparse_file_with_blocks_of_zeros_restores_byte_for_byte_with_holes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup_files, "WINDOW", MiB)  # windows end inside data and zeros
    repo = Repository.create(DirTarget(tmp_path / "usb"), "pw",
                             scrypt={"n": 2**10, "r": 8, "p": 1})
    original = tmp_path / "disk"
    with open(original, "wb") as f:
        for n, zeros in [(100, False), (3 * ZERO_BLOCK, True), (MiB - 100, False),
                         (2 * MiB, True), (ZERO_BLOCK // 2, False), (ZERO_BLOCK, True),
                         (MiB + 7, False)]:
            f.write(bytes(n) if zeros else os.urandom(n))
        f.truncate(f.tell() + 8 * MiB)  # a hole at the end
    for fine in (False, True):
        with ChunkSender(repo) as sender:
            entry = sender.send_file(original, "disk", fine=fine)
        copy = tmp_path / f"copy-{fine}"
        with ChunkFetcher(repo) as fetcher:
            fetcher.restore_files([(entry, copy)])
        assert copy.read_bytes() == original.read_bytes()
        assert copy.stat().st_blocks * 512 <= 3 * MiB, "zeros and holes stay holes"


def _private_map(path: Path) -> mmap.mmap:
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE)


def test_a_kept_ram_delta_is_backed_up_page_by_page(tmp_path: Path) -> None:
    """Two deltas (``guestram``, of a private mapping of this process, as QEMU maps ram.img)
    that differ in one page give page groups that differ in that page's group only; the
    groups restore each delta exactly."""
    page = guestram.PAGE
    ram = tmp_path / "ram.img"
    ram.write_bytes(b"".join(os.urandom(page // 2) + bytes(page // 2)
                             for _ in range(16 * GROUP)))
    m = _private_map(ram)
    m[3 * page:40 * page] = os.urandom(37 * page)  # literal pages
    m[(2 * GROUP + 5) * page + 8:(2 * GROUP + 5) * page + 16] = b"counter!"  # XOR ram.img
    m[4 * GROUP * page:(4 * GROUP + 10) * page] = m[3 * page:13 * page]  # copies
    m[7 * GROUP * page:(7 * GROUP + 1) * page] = bytes(page)
    m[12 * GROUP * page:(12 * GROUP + 1) * page] = os.urandom(page)
    first = bytes(m)
    delta_a = b"".join(guestram.read_delta(os.getpid(), ram))
    m[20 * page + 5:20 * page + 9] = b"next"  # a later keep changed one page
    second = bytes(m)
    delta_b = b"".join(guestram.read_delta(os.getpid(), ram))
    m.close()
    groups_a, groups_b = list(to_groups([delta_a])), list(to_groups([delta_b]))
    assert len(groups_a) == len(groups_b) == 5
    changed = [i for i, (a, b) in enumerate(zip(groups_a, groups_b, strict=True)) if a != b]
    assert changed == [20 // GROUP], "only the changed page's group is new"
    for groups, want in ((groups_a, first), (groups_b, second)):
        fresh = _private_map(ram)
        try:
            plain = list(guestram.encode_delta(to_records(iter(groups))))
            guestram.write_delta(os.getpid(), ram, plain)
            assert bytes(fresh) == want
        finally:
            fresh.close()
    with pytest.raises(BackupError):
        list(to_records([groups_a[0][:-10]]))


def test_a_file_stored_as_ram_groups_is_never_reused_as_its_bytes(tmp_path: Path) -> None:
    """A kept RAM delta backed up as page groups, then — unchanged — as a file (its context
    got a passphrase, so the backup cannot decrypt it any more): the file's own bytes are
    stored, never the groups' plaintext under the file's name."""
    repo = Repository.create(DirTarget(tmp_path / "usb"), "pw",
                             scrypt={"n": 2**10, "r": 8, "p": 1})
    delta = tmp_path / "ram-1.enc"
    delta.write_bytes(os.urandom(3 * ZERO_BLOCK))  # stands for the encrypted delta
    plain = b"the delta's plaintext pages"
    with ChunkSender(repo) as sender:
        groups = sender.send_groups(delta, delta.name, lambda: [plain], {"ram": {"label": ""}})
        again = sender.send_groups(delta, delta.name, lambda: [b"never read"],
                                   {"ram": {"label": ""}}, groups)
        as_file = sender.send_file(delta, delta.name, groups)
    assert again is groups, "unchanged: the groups again, nothing read"
    assert "ram" not in as_file
    copy = tmp_path / "copy"
    with ChunkFetcher(repo) as fetcher:
        fetcher.restore_files([(as_file, copy)])
    assert copy.read_bytes() == delta.read_bytes()

"""Backup benchmark (issue 16's goal table): a kept context backed up to a local SeaweedFS
against a plain boto3 upload of the same bytes, an incremental backup after a small keep, a
second context on the same image, a restore into an empty home against a plain boto3 download,
and restic side by side when it is installed. All in one run, on the same server.

    python benchmarks/backup.py [--image browser|tiny]

The browser image by default (the issue's "kept browser context"; built first if missing,
which takes minutes); ``--image tiny`` for a quick run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _home import bench_home
from seaweed import seaweedfs  # type: ignore[import-not-found]

from sandbox_app.core.backup import S3Target, backup, restore
from sandbox_app.core.backup.engine import IMAGE_FILES, backed_up_files, points_needed
from sandbox_app.core.contexts import ContextStore, Profile
from sandbox_app.core.contexts.compaction import MAX_LAYERS
from sandbox_app.core.images import ImageStore
from sandbox_app.core.storage import Paths

PASS = "benchmark passphrase"
INCREMENTALS = 3
MiB = 1 << 20


def _run(context: str, cmd: str) -> None:
    subprocess.run([sys.executable, "-m", "sandbox_app", "run", context, "--headless",
                    "--on-exit", "keep", "--exec", cmd], check=True, capture_output=True)


def _files(paths: Paths, name: str) -> list[Path]:
    ctx = ContextStore(paths).get(name)
    image = ImageStore(paths).get(ctx.profile.image)
    out = backed_up_files(ctx.data_dir) + [image.directory / f for f in IMAGE_FILES
                                           if (image.directory / f).exists()]
    for point in points_needed(paths, ctx, image):
        out += [p for p in point.directory.rglob("*") if p.is_file()]
    return out


def _ratio(plain_s: float, ours_s: float, plain_bytes: int = 1, our_bytes: int = 1) -> str:
    """Our throughput over the plain client's (goal: >= 0.80)."""
    return f"{(our_bytes / ours_s) / (plain_bytes / plain_s):.2f}"


def _restic(env: dict[str, str], *args: str) -> dict[str, object]:
    proc = subprocess.run(["restic", "--json", "-q", *args], env=env, check=True,
                          capture_output=True, text=True)
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    return next((x for x in reversed(lines) if x.get("message_type") == "summary"),
                lines[-1] if lines else {})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="browser", choices=["browser", "tiny"])
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []
    with bench_home(args.image) as paths, tempfile.TemporaryDirectory() as tmp, \
            seaweedfs(Path(tmp)) as s3:
        os.environ.update(s3.env())
        ContextStore(paths).create(Profile(name="bench", image=args.image))
        _run("bench", "echo marker > /root/marker; sync")
        files = _files(paths, "bench")
        size = sum(p.stat().st_size for p in files)
        client = s3.client()
        client.create_bucket(Bucket="plain")
        t0 = time.monotonic()
        for i, p in enumerate(files):
            client.upload_file(str(p), "plain", f"f{i}")
        plain_up = time.monotonic() - t0
        first = backup(paths, S3Target("s3://bsbench/a"), PASS, ["bench"])
        read = first.stats.bytes_read
        rows.append(("first backup", f"{read / MiB:.0f} MiB read, "
                     f"{first.stats.bytes_sent / MiB:.0f} MiB sent in {first.seconds:.2f} s "
                     f"({first.unlock_seconds:.2f} s of it scrypt)",
                     f"boto3 upload of the same files ({size / MiB:.0f} MiB apparent): "
                     f"{plain_up:.2f} s; throughput ratio {_ratio(plain_up, first.seconds)}"
                     f" ({_ratio(plain_up, first.seconds - first.unlock_seconds)} "
                     "without scrypt)"))
        incs = []  # the row is the first; two more keeps show what follows
        for i in range(INCREMENTALS):
            _run("bench", f"dd if=/dev/urandom of=/root/inc{i} bs=1M count=1 2>/dev/null; sync")
            incs.append(backup(paths, S3Target("s3://bsbench/a"), PASS, ["bench"]))
        rows.append(("incremental after a 1 MiB keep",
                     f"{incs[0].stats.bytes_sent / MiB:.2f} MiB sent in {incs[0].seconds:.2f} s",
                     "goal ≤ 4 MiB, ≤ 2 s"))
        rows.append((f"  the {INCREMENTALS - 1} keeps after it", ", ".join(
            f"{r.stats.bytes_sent / MiB:.2f} MiB in {r.seconds:.2f} s" for r in incs[1:]),
            f"a keep's layers are compacted when more than {MAX_LAYERS}"))
        ContextStore(paths).create(Profile(name="other", image=args.image))
        _run("other", "echo two > /root/two; sync")
        sec = backup(paths, S3Target("s3://bsbench/a"), PASS, ["other"])
        rows.append(("second context, same image",
                     f"{sec.stats.bytes_sent / MiB:.2f} MiB sent, "
                     f"{sec.stats.bytes_skipped / MiB:.0f} MiB skipped",
                     "its snapshot point not sent again"))
        home_b = Path(tmp) / "b"
        old = os.environ["BLANKSLATE_HOME"]
        os.environ["BLANKSLATE_HOME"] = str(home_b)
        try:
            rest = restore(Paths.from_env().ensure(), S3Target("s3://bsbench/a"), PASS, ["bench"])
            out = subprocess.run([sys.executable, "-m", "sandbox_app", "run", "bench",
                                  "--headless", "--exec", "cat /root/marker"],
                                 capture_output=True, text=True, check=False).stdout
        finally:
            os.environ["BLANKSLATE_HOME"] = old
        dl = Path(tmp) / "dl"
        dl.mkdir()
        t0 = time.monotonic()
        for i in range(len(files)):
            client.download_file("plain", f"f{i}", str(dl / f"f{i}"))
        plain_down = time.monotonic() - t0
        shutil.rmtree(dl)
        restored = sum(p.stat().st_size for p in home_b.rglob("*") if p.is_file())
        rows.append(("restore into an empty home",
                     f"{restored / MiB:.0f} MiB in {rest.seconds:.2f} s "
                     f"({rest.unlock_seconds:.2f} s of it scrypt), "
                     f"{rest.stats.bytes_received / MiB:.0f} MiB received; marker: "
                     f"{'yes' if 'marker' in out else 'NO'}",
                     f"boto3 download of the same files ({size / MiB:.0f} MiB): "
                     f"{plain_down:.2f} s; throughput ratio "
                     f"{_ratio(plain_down, rest.seconds, size, restored)} "
                     f"({_ratio(plain_down, rest.seconds - rest.unlock_seconds, size, restored)}"
                     " without scrypt)"))
        shutil.rmtree(home_b, ignore_errors=True)
        if shutil.which("restic"):
            env = {**os.environ, "RESTIC_PASSWORD": PASS,
                   "RESTIC_REPOSITORY": f"s3:{s3.endpoint}/restic/r",
                   "RESTIC_CACHE_DIR": str(Path(tmp) / "rc")}
            client.create_bucket(Bucket="restic")
            subprocess.run(["restic", "init", "-q"], env=env, check=True, capture_output=True)
            # restic reads the same bytes (the files of the second keep)
            t0 = time.monotonic()
            s1 = _restic(env, "backup", *map(str, _files(paths, "bench")))
            r1 = time.monotonic() - t0
            _run("bench", "dd if=/dev/urandom of=/root/more2 bs=1M count=1 2>/dev/null; sync")
            t0 = time.monotonic()
            s2 = _restic(env, "backup", *map(str, _files(paths, "bench")))
            r2 = time.monotonic() - t0
            t0 = time.monotonic()
            _restic(env, "restore", "latest", "--target", str(Path(tmp) / "rr"))
            r3 = time.monotonic() - t0
            rows.append(("restic first / incremental / restore",
                         f"{int(s1.get('data_added', 0)) / MiB:.0f} MiB in {r1:.2f} s / "  # type: ignore[call-overload]
                         f"{int(s2.get('data_added', 0)) / MiB:.2f} MiB in {r2:.2f} s / "  # type: ignore[call-overload]
                         f"{r3:.2f} s", "restic " + subprocess.run(
                             ["restic", "version"], capture_output=True, text=True,
                             check=False).stdout.split()[1]))
        else:
            rows.append(("restic", "not installed: no side-by-side numbers", ""))
    for name, value, ref in rows:
        print(f"{name:34} {value:60} {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

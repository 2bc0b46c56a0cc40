"""Recipe for the `browser` guest: Debian bookworm, cage and Firefox ESR as a kiosk.

    python3 vm_images/browser/build.py --out OUTDIR --cache CACHEDIR

Needs root (debootstrap, chroot) and the host tools debootstrap, mke2fs, qemu-img, cpio.
Phases, each cached in CACHEDIR so an interrupted build resumes where it stopped:

1. ``debootstrap``: ``debootstrap --variant=minbase`` into a tarball (``base-*.tar``).
2. ``packages``: unpack it, ``apt-get install`` cage, Firefox ESR, seatd, udev, qemu-ga…
   with docs, man pages and locales excluded by dpkg; fetch the generic kernel package.
   The result is ``rootfs/`` with a stamp naming what went into it.
3. ``kernel``: unpack the kernel package (never installed in the guest: the initramfs
   carries the few modules the guest needs).
4. ``configure``: the guest-side files from ``files/`` (busybox init, kiosk session, agent,
   Firefox profile and policies), the user ``browser``, stripping.
5. ``initramfs``: busybox + the modules, in load order; mounts ``/dev/vda`` and switches root.
6. ``disk``: ``mke2fs -t ext4 -d rootfs`` (no loop mount), then a compressed qcow2.

Progress: one JSON object per line on stdout; log on stderr and in ``OUTDIR/build.log``.
``recipe.json`` is written last, so a directory holding it is complete.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import IO

NAME = "browser"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SOURCES = (
    f"deb {MIRROR} {SUITE} main\n"
    f"deb {MIRROR} {SUITE}-updates main\n"
    f"deb http://deb.debian.org/debian-security {SUITE}-security main\n"
)
PACKAGES = (
    "firefox-esr", "cage", "xwayland", "seatd", "grim", "udev", "qemu-guest-agent",
    "busybox-static", "wl-clipboard", "dbus-user-session", "libpam-systemd", "fonts-dejavu-core",
    "fonts-liberation2",
)
KERNEL_META = "linux-image-amd64"
# Modules the guest needs from the generic kernel, loaded by the initramfs (dependencies
# are added from each module's ``depends=``). The root filesystem carries no modules.
MODULES = (
    "virtio_pci", "virtio_blk", "virtio_console", "virtio_rng", "virtio_net", "virtio_gpu",
    "virtio_input", "evdev", "vmgenid", "crc32c_generic", "ext4",
)
# Paths dpkg never unpacks in the guest (and that are removed if already there).
EXCLUDED = (
    "/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
    "/usr/share/lintian/*", "/usr/share/linda/*", "/usr/share/bug/*",
)
KEPT = ("/usr/share/doc/*/copyright",)

APPEND = "console=hvc0 quiet loglevel=3 rdinit=/init net.ifnames=0 panic=-1 " \
         "vt.global_cursor_default=0"
MEMORY_MIB = 1536
CPUS = 2
DISK_MIB = 4096  # sparse; room for downloads and Firefox's profile in the session overlay
AGENT_PORT = "org.qemu.guest_agent.0"
DISPLAY = {"width": 1280, "height": 800}
USER, UID = "browser", 1000
PROFILE = f"home/{USER}/.mozilla/blankslate"

FILES = Path(__file__).resolve().parent / "files"
# (file in files/, path in the guest, mode)
GUEST_FILES = (
    ("inittab", "etc/inittab", 0o644),
    ("rc", "usr/local/sbin/blankslate-rc", 0o755),
    ("agent", "usr/local/sbin/blankslate-agent", 0o755),
    ("kiosk", "usr/local/sbin/blankslate-kiosk", 0o755),
    ("env", "usr/local/lib/blankslate/env", 0o644),
    ("session", "usr/local/lib/blankslate/session", 0o755),
    ("udhcpc.script", "usr/local/lib/blankslate/udhcpc.script", 0o755),
    ("blankslate-open", "usr/local/bin/blankslate-open", 0o755),
    ("blankslate-ready", "usr/local/bin/blankslate-ready", 0o755),
    ("blankslate-clipboard", "usr/local/bin/blankslate-clipboard", 0o755),
    ("start.html", "usr/local/share/blankslate/start.html", 0o644),
    ("policies.json", "usr/share/firefox-esr/distribution/policies.json", 0o644),
    ("user.js", f"{PROFILE}/user.js", 0o644),
)

APT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
}


class BuildError(Exception):
    """A phase failed; the message is the one line shown to the user."""


# ---------------------------------------------------------------------------- reporting


class Log:
    """Human log to stderr and OUTDIR/build.log; progress as JSON lines on stdout."""

    def __init__(self) -> None:
        self.file: IO[str] | None = None
        self.started = time.monotonic()

    def open(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def info(self, msg: str) -> None:
        line = f"{NAME}: [{time.monotonic() - self.started:6.1f}s] {msg}"
        print(line, file=sys.stderr, flush=True)
        self.raw(line)

    def raw(self, line: str) -> None:
        """Into the build log only (command output)."""
        if self.file is not None:
            self.file.write(line.rstrip("\n") + "\n")
            self.file.flush()

    @staticmethod
    def progress(phase: str, fraction: float) -> None:
        print(json.dumps({"phase": phase, "fraction": round(fraction, 3)}), flush=True)


log = Log()
_child: subprocess.Popen[str] | None = None


def run(*argv: str | Path, env: dict[str, str] | None = None,
        on_line: Callable[[str], None] | None = None) -> None:
    """Run a command, its output into the build log; raise BuildError when it fails."""
    global _child  # noqa: PLW0603  (the SIGTERM handler stops it)
    args = [str(a) for a in argv]
    log.raw("$ " + " ".join(args))
    tail: collections.deque[str] = collections.deque(maxlen=3)
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace",
                          env=env) as proc:
        _child = proc
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.raw(line)
                if line.strip():
                    tail.append(line.strip())
                if on_line is not None:
                    on_line(line)
        except BaseException:
            proc.terminate()
            raise
        finally:
            _child = None
            proc.wait()
    if proc.returncode != 0:
        raise BuildError(f"{Path(args[0]).name} {args[1] if len(args) > 1 else ''} failed "
                         f"(exit {proc.returncode}): {tail[-1] if tail else 'no output'}")


def capture(*argv: str | Path) -> str:
    """Run a command and return its stdout (for queries, not for long work)."""
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"{argv[0]} failed: {proc.stderr.strip()[-200:]}")
    return proc.stdout


def chroot(root: Path, *argv: str, on_line: Callable[[str], None] | None = None) -> None:
    run("chroot", root, *argv, env=APT_ENV, on_line=on_line)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _child is not None and _child.poll() is None:
        _child.terminate()
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------- mounts


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path``, deepest first."""
    base = path.resolve()
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                            line.split()[4]))
        if point == base or base in point.parents:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(path: Path) -> None:
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)
    if mounts_under(path):
        raise BuildError(f"cannot unmount everything under {path}")


def remove_tree(path: Path) -> None:
    """rm -rf that never follows a mount point (a bind mount of /dev, say) into the host."""
    if path.exists():
        unmount_all(path)
        shutil.rmtree(path)


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[None]:
    """/proc and a private /dev/shm for maintainer scripts (debootstrap made /dev nodes)."""
    try:
        run("mount", "-t", "proc", "proc", root / "proc")
        run("mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", root / "dev" / "shm")
        yield
    finally:
        unmount_all(root / "proc")
        unmount_all(root / "dev" / "shm")


# ---------------------------------------------------------------------------- helpers


def key_of(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def write_file(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    path.chmod(mode)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.rename(path)


def du_mib(path: Path) -> float:
    return int(capture("du", "-sx", "--block-size=1", path).split()[0]) / 2**20


# ---------------------------------------------------------------------------- phases


def debootstrap(cache: Path) -> Path:
    """A minbase bootstrap as a tarball (cached; debs cached too)."""
    tar = cache / f"base-{key_of(SUITE, MIRROR, 'minbase')}.tar"
    if tar.exists():
        log.info(f"debootstrap: cached {tar.name}")
        return tar
    if shutil.which("debootstrap") is None:
        log.info("installing debootstrap on the host")
        run("apt-get", "install", "-y", "-q", "debootstrap", env={**os.environ, **APT_ENV})
    target = cache / "debootstrap.tmp"
    remove_tree(target)
    debs = cache / "debootstrap-debs"
    debs.mkdir(exist_ok=True)
    lines = 0

    def on_line(line: str) -> None:
        nonlocal lines
        if line.startswith("I: "):
            lines += 1
            if lines % 10 == 0:
                log.progress("debootstrap", min(0.25, 0.25 * lines / 460))

    log.info(f"debootstrap --variant=minbase {SUITE} {MIRROR}")
    run("debootstrap", "--variant=minbase", f"--cache-dir={debs}", SUITE, target, MIRROR,
        on_line=on_line)
    unmount_all(target)
    run("tar", "-C", target, "--numeric-owner", "-cf", f"{tar}.tmp", ".")
    Path(f"{tar}.tmp").rename(tar)
    remove_tree(target)
    for old in cache.glob("base-*.tar"):
        if old != tar:
            old.unlink()
    return tar


def install_packages(cache: Path, base: Path) -> tuple[Path, Path]:
    """``rootfs/`` with every package installed, and the kernel package's .deb."""
    rootfs, stamp = cache / "rootfs", cache / "rootfs.json"
    key = key_of(base.name, SOURCES, PACKAGES, EXCLUDED, KEPT)
    with contextlib.suppress(OSError, ValueError, KeyError):
        meta = json.loads(stamp.read_text())
        kernel_deb = cache / "debs" / meta["kernel_deb"]
        if meta["key"] == key and rootfs.is_dir() and kernel_deb.exists():
            log.info("packages: cached rootfs")
            return rootfs, kernel_deb
    stamp.unlink(missing_ok=True)
    remove_tree(rootfs)
    rootfs.mkdir()
    run("tar", "-C", rootfs, "--numeric-owner", "-xf", base)
    write_file(rootfs / "etc/apt/sources.list", SOURCES)
    write_file(rootfs / "etc/dpkg/dpkg.cfg.d/01-blankslate",
               "".join(f"path-exclude={p}\n" for p in EXCLUDED)
               + "".join(f"path-include={p}\n" for p in KEPT))
    write_file(rootfs / "etc/apt/apt.conf.d/01-blankslate",
               'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n')
    # Maintainer scripts must not start daemons in the chroot.
    write_file(rootfs / "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
    archives = rootfs / "var/cache/apt/archives"
    saved = cache / "debs"
    saved.mkdir(exist_ok=True)
    for deb in saved.glob("*.deb"):
        with contextlib.suppress(FileExistsError):
            os.link(deb, archives / deb.name)

    with chroot_mounts(rootfs):
        log.info("apt-get update")
        chroot(rootfs, "apt-get", "-q", "update")
        log.progress("packages", 0.27)
        log.info(f"apt-get install {' '.join(PACKAGES)}")
        chroot(rootfs, "apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0", "install", *PACKAGES,
               on_line=AptProgress())
        kernel_pkg = _kernel_package(rootfs)
        log.info(f"apt-get download {kernel_pkg}")
        chroot(rootfs, "sh", "-c", f"cd /var/cache/apt/archives && apt-get -q download "
               f"{kernel_pkg}")

    for deb in archives.glob("*.deb"):
        if not (saved / deb.name).exists():
            shutil.move(deb, saved / deb.name)
        else:
            deb.unlink()
    kernel_deb = next(saved.glob(f"{kernel_pkg}_*.deb"))
    atomic_write(stamp, json.dumps({"key": key, "kernel_deb": kernel_deb.name}) + "\n")
    log.info(f"packages: rootfs {du_mib(rootfs):.0f} MiB")
    return rootfs, kernel_deb


class AptProgress:
    """Progress from apt-get's plain output: downloads, then dpkg's unpack + set-up lines.

    (``APT::Status-Fd=1`` would be neater, but maintainer scripts then fail writing to
    stdout with EIO.)
    """

    def __init__(self) -> None:
        self.packages = 0
        self.steps = 0

    def __call__(self, line: str) -> None:
        if m := re.match(r"\d+ upgraded, (\d+) newly installed", line):
            self.packages = int(m.group(1))
        elif line.startswith(("Unpacking ", "Setting up ")) and self.packages:
            self.steps += 1
            if self.steps % 8 == 0:
                Log.progress("packages", 0.30 + 0.30 * min(1.0, self.steps / (2 * self.packages)))


def _kernel_package(rootfs: Path) -> str:
    out = capture("chroot", rootfs, "apt-cache", "depends", KERNEL_META)
    m = re.search(r"Depends: (linux-image-[\w.+-]+)", out)
    if not m:
        raise BuildError(f"cannot resolve {KERNEL_META}")
    return m.group(1)


def unpack_kernel(cache: Path, kernel_deb: Path) -> Path:
    """The kernel package's files (``boot/vmlinuz-*``, ``lib/modules/*``)."""
    kdir = cache / ("kernel-" + kernel_deb.name.removesuffix(".deb"))
    if (kdir / ".complete").exists():
        return kdir
    remove_tree(kdir)
    run("dpkg-deb", "-x", kernel_deb, kdir)
    (kdir / ".complete").touch()
    for old in cache.glob("kernel-*"):
        if old != kdir:
            remove_tree(old)
    return kdir


def configure(rootfs: Path) -> None:
    """Guest-side files, the user, and stripping (idempotent: reruns on a cached rootfs)."""
    for src, dst, mode in GUEST_FILES:
        write_file(rootfs / dst, (FILES / src).read_bytes(), mode)
    if f"\n{USER}:" not in "\n" + (rootfs / "etc/passwd").read_text():
        run("chroot", rootfs, "useradd", "--create-home", "--uid", str(UID),
            "--user-group", "--groups", "video,input", "--shell", "/bin/sh", USER)
    home = rootfs / "home" / USER
    (home / "Downloads").mkdir(exist_ok=True)
    run("chown", "-R", f"{UID}:{UID}", home)
    write_file(rootfs / "etc/hostname", "blankslate\n")
    write_file(rootfs / "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tblankslate\n"
               "::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    write_file(rootfs / "etc/resolv.conf", "")
    write_file(rootfs / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    write_file(rootfs / "etc/fstab", "# mounted by the initramfs and blankslate-rc\n")
    _link(rootfs / "sbin/init", "/bin/busybox")  # busybox init reads /etc/inittab
    # qemu-ga's guest-set-time runs `hwclock -w` after setting the clock (and fails without
    # it). Writing the virtual RTC buys nothing (the app sets the clock after every restore)
    # and a real hwclock waits for a second boundary: ~1 s on every session start.
    hwclock = rootfs / "usr/sbin/hwclock"
    if hwclock.is_symlink():
        hwclock.unlink()
    write_file(hwclock, "#!/bin/sh\n# See vm_images/browser/build.py: the RTC is not used.\n"
               "exit 0\n", 0o755)
    (rootfs / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    strip(rootfs)


def _link(path: Path, target: str) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def strip(rootfs: Path) -> None:
    """Remove what the guest never reads: docs, locales, apt's lists and caches, logs."""
    for pattern in EXCLUDED:
        for p in rootfs.glob(pattern.lstrip("/")):
            if p.parent.name == "doc" and p.is_dir() and not p.is_symlink():
                for child in p.iterdir():  # keep the licences
                    if child.name != "copyright":
                        remove_path(child)
            else:
                remove_path(p)
    for d in ("var/lib/apt/lists", "var/cache/apt", "var/log", "tmp"):
        for child in (rootfs / d).glob("*"):
            remove_path(child)
    for p in rootfs.glob("var/cache/debconf/*-old"):
        remove_path(p)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        remove_tree(path)
    else:
        path.unlink()


def module_index(kdir: Path) -> dict[str, Path]:
    return {p.name.split(".ko")[0].replace("-", "_"): p
            for p in (kdir / "lib" / "modules").rglob("*.ko*")}


def module_depends(path: Path) -> list[str]:
    m = re.search(rb"\x00depends=([\w,-]*)\x00", read_module(path))
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d] if m else []


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.suffix == ".xz" else data


def modules_in_load_order(index: dict[str, Path], wanted: tuple[str, ...]) -> list[Path]:
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order or name not in index:
            return
        for dep in module_depends(index[name]):
            visit(dep)
        order.append(name)

    for name in wanted:
        if name not in index:
            log.info(f"initramfs: module {name} not found (built in?)")
        visit(name)
    return [index[n] for n in order]


def build_initramfs(kdir: Path, rootfs: Path, work: Path, out: Path) -> None:
    """Static busybox (from the guest's busybox-static) + modules, as a gzip'd newc cpio."""
    root = work / "initramfs"
    remove_tree(root)
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "modules").mkdir(parents=True)
    shutil.copy2(rootfs / "bin" / "busybox", root / "bin" / "busybox")
    names = []
    for mod in modules_in_load_order(module_index(kdir), MODULES):
        name = mod.name.split(".ko")[0] + ".ko"
        (root / "lib" / "modules" / name).write_bytes(read_module(mod))
        names.append(name)
    log.info("initramfs modules: " + " ".join(n.removesuffix(".ko") for n in names))
    write_file(root / "modules.load", "\n".join(names) + "\n")
    write_file(root / "init", (FILES / "initramfs-init").read_bytes(), 0o755)
    write_file(out, gzip.compress(cpio_newc(root), compresslevel=9, mtime=0))
    remove_tree(root)


def cpio_newc(root: Path) -> bytes:
    """The tree under ``root`` as a newc cpio archive (sorted, reproducible)."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    proc = subprocess.run(["cpio", "--null", "-o", "-H", "newc", "--quiet", "--reproducible"],
                          cwd=root, input="\0".join([".", *names]).encode() + b"\0",
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"cpio failed: {proc.stderr.decode(errors='replace')[-200:]}")
    return proc.stdout


def build_disk(rootfs: Path, work: Path, out: Path) -> None:
    """ext4 from the directory (no loop mount), then a compressed qcow2."""
    unmount_all(rootfs)
    raw = work / "root.raw"
    raw.unlink(missing_ok=True)
    log.info(f"mke2fs -t ext4 -d rootfs ({DISK_MIB} MiB, sparse)")
    run("mke2fs", "-q", "-F", "-t", "ext4", "-L", "blankslate-root", "-m", "0",
        "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", rootfs, raw, f"{DISK_MIB}M")
    log.progress("disk image", 0.85)
    log.info("qemu-img convert -c (zstd)")
    tmp = out.with_name(out.name + ".tmp")
    run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-c",
        "-o", "compression_type=zstd,cluster_size=65536", "-m", "4", "-W", raw, tmp)
    tmp.rename(out)
    raw.unlink()


def write_recipe(out: Path) -> None:
    recipe = {
        "name": NAME,
        "kernel": "vmlinuz",
        "initrd": "initrd.img",
        "disk": "root.qcow2",
        "append": APPEND,
        "memory_mib": MEMORY_MIB,
        "cpus": CPUS,
        "agent_port": AGENT_PORT,
        "ready_command": "/usr/local/bin/blankslate-ready",
        "open_url_command": ["/usr/local/bin/blankslate-open"],
        # Firefox's empty document (between the old page and the new one's first paint).
        "loading_color": "#f9f9fb",
        "clipboard_set_command": ["/usr/local/bin/blankslate-clipboard", "set"],
        "clipboard_get_command": ["/usr/local/bin/blankslate-clipboard", "get"],
        "downloads_dir": f"/home/{USER}/Downloads",
        "display": DISPLAY,
    }
    atomic_write(out / "recipe.json", json.dumps(recipe, indent=2) + "\n")


# ---------------------------------------------------------------------------- main


def build(out: Path, cache: Path) -> None:
    if os.geteuid() != 0:
        raise BuildError("the browser image must be built as root (debootstrap, chroot)")
    (out / "recipe.json").unlink(missing_ok=True)
    work = out / ".work"
    remove_tree(work)
    work.mkdir()
    log.progress("debootstrap", 0.0)
    base = debootstrap(cache)
    log.progress("packages", 0.25)
    rootfs, kernel_deb = install_packages(cache, base)
    log.progress("kernel", 0.6)
    kdir = unpack_kernel(cache, kernel_deb)
    shutil.copy2(next((kdir / "boot").glob("vmlinuz-*")), out / "vmlinuz")
    log.progress("configure", 0.65)
    configure(rootfs)
    log.info(f"rootfs after stripping: {du_mib(rootfs):.0f} MiB")
    log.progress("initramfs", 0.7)
    build_initramfs(kdir, rootfs, work, out / "initrd.img")
    log.progress("disk image", 0.75)
    build_disk(rootfs, work, out / "root.qcow2")
    remove_tree(work)
    log.info(f"root.qcow2: {(out / 'root.qcow2').stat().st_size / 2**20:.0f} MiB")
    write_recipe(out)
    log.progress("done", 1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    args = ap.parse_args()
    out: Path = args.out.resolve()
    cache: Path = args.cache.resolve()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        out.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        log.open(out / "build.log")
        build(out, cache)
        log.info(f"built in {time.monotonic() - log.started:.0f}s")
        return 0
    except (BuildError, OSError, StopIteration, subprocess.SubprocessError) as exc:
        msg = str(exc) or type(exc).__name__
        log.raw(f"error: {msg}")
        print(f"{NAME}: error: {msg}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())

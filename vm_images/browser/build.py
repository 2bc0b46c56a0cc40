"""Recipe for the `browser` guest: Debian bookworm, cage and Firefox ESR as a kiosk.

    python3 vm_images/browser/build.py --out OUTDIR --cache CACHEDIR

Needs no root: ``mmdebstrap`` in unshare mode (unprivileged user namespaces and a subuid
range, as Debian gives every user) builds the root filesystem; as root it uses its root
mode. Host tools: mmdebstrap, mke2fs, qemu-img, dpkg-deb, cpio. Steps:

1. ``mmdebstrap --variant=minbase --include=…`` (cage, Firefox ESR, seatd, udev, qemu-ga…),
   docs, man pages and locales excluded by dpkg; downloaded packages are cached in
   ``CACHEDIR/debs``, so a rebuild downloads only what changed.
2. Inside mmdebstrap's namespace (this script with ``--in-namespace``): fetch the generic
   kernel package, configure a copy of the root filesystem (busybox init, kiosk session,
   agent, network, Firefox profile and policies, the user ``browser``), strip it and make
   the ext4 image with ``mke2fs -d`` (no loop mount; owners as the guest must see them).
3. The kernel (unpacked, never installed in the guest) and a busybox initramfs carrying the
   few modules the guest needs; the ext4 image as a compressed qcow2.

Progress: one JSON object per line on stdout; log on stderr and in ``OUTDIR/build.log``.
``recipe.json`` is written last, so a directory holding it is complete.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gzip
import json
import lzma
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
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
RESEED_LIBRARY = "usr/local/lib/blankslate/nss-reseed.so"  # see files/nss-reseed.c
# (file in files/, path in the guest, mode)
GUEST_FILES = (
    ("inittab", "etc/inittab", 0o644),
    ("rc", "usr/local/sbin/blankslate-rc", 0o755),
    ("agent", "usr/local/sbin/blankslate-agent", 0o755),
    ("kiosk", "usr/local/sbin/blankslate-kiosk", 0o755),
    ("env", "usr/local/lib/blankslate/env", 0o644),
    ("session", "usr/local/lib/blankslate/session", 0o755),
    ("udhcpc.script", "usr/local/lib/blankslate/udhcpc.script", 0o755),
    ("network", "usr/local/sbin/blankslate-net", 0o755),
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


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _child is not None and _child.poll() is None:
        _child.terminate()
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------- helpers


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


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def tool(name: str, package: str) -> str:
    """A host tool, found where Debian puts it (/usr/sbin and /sbin are not on a normal
    user's PATH), or a one-line error naming its package."""
    path = shutil.which(name, path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"]))
    if path is None:
        raise BuildError(f"{name} not found: install the Debian package '{package}'")
    return path


def check_user_namespaces() -> None:
    """As a normal user, mmdebstrap needs unprivileged user namespaces and a subuid range."""
    if os.geteuid() == 0:
        return
    user = pwd.getpwuid(os.getuid()).pw_name
    for db in ("/etc/subuid", "/etc/subgid"):
        with contextlib.suppress(OSError):
            if any(line.split(":")[0] in (user, str(os.getuid()))
                   for line in Path(db).read_text().splitlines()):
                continue
        raise BuildError(
            f"no subordinate id range for '{user}' in {db}: add one with 'sudo usermod "
            f"--add-subuids 100000-165535 --add-subgids 100000-165535 {user}'")
    probe = subprocess.run([tool("unshare", "util-linux"), "--user", "--map-root-user", "true"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        raise BuildError(
            "unprivileged user namespaces are disabled on this machine (needed to build the "
            "browser image without root): enable them with 'sudo sysctl -w "
            "kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000'")


# ---------------------------------------------------------------------------- phases


class MmdebstrapProgress:
    """Progress from mmdebstrap's ``I:`` lines (its phases, in order)."""

    PHASES = (("I: downloading packages", 0.05), ("I: extracting archives", 0.15),
              ("I: installing essential", 0.2), ("I: installing remaining", 0.3),
              ("I: running --customize-hook", 0.5))

    def __call__(self, line: str) -> None:
        for prefix, fraction in self.PHASES:
            if line.startswith(prefix):
                log.progress("packages", fraction)
                log.info(line.strip().removeprefix("I: "))


# Inside the namespace, root is a sub-id with no access to the user's files: the
# namespace step works in the root filesystem's /tmp (never part of the image) and
# mmdebstrap's own copy-out hook brings its results to the user.
NS_OUT = "tmp/blankslate-out"
NS_STAGE = "tmp/blankslate-stage"
NS_FILES = ("root.qcow2", "busybox", "kernel-deb")


def bootstrap(cache: Path, work: Path) -> None:
    """Run mmdebstrap (unprivileged: unshare mode) and, inside its namespace, this script's
    ``--in-namespace`` step; leaves ``root.qcow2``, ``busybox`` and ``kernel-deb`` (the
    kernel package's file name) in ``work``. Packages are cached in ``cache/debs``."""
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    check_user_namespaces()
    hook = f'{shlex.quote(sys.executable)} {shlex.quote(__file__)} --in-namespace "$1"'
    argv: list[str | Path] = [
        tool("mmdebstrap", "mmdebstrap"), "--mode=auto", "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        '--aptopt=APT::Install-Recommends "false"', '--aptopt=APT::Install-Suggests "false"',
        *(f"--dpkgopt=path-exclude={p}" for p in EXCLUDED),
        *(f"--dpkgopt=path-include={p}" for p in KEPT),
        "--skip=essential/unlink",
        '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {shlex.quote(str(debs))} /var/cache/apt/archives/",
        f"--customize-hook={hook}",
        f"--customize-hook=sync-out /var/cache/apt/archives {shlex.quote(str(debs))}",
        "--customize-hook=copy-out " + " ".join(f"/{NS_OUT}/{f}" for f in NS_FILES)
        + f" {shlex.quote(str(work))}",
        SUITE, "/dev/null", *SOURCES.strip().splitlines(),
    ]
    log.info(f"mmdebstrap --variant=minbase {SUITE} ({len(PACKAGES)} packages and what they need)")
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '/usr/bin:/bin')}:/usr/sbin:/sbin"}
    run(*argv, env=env, on_line=MmdebstrapProgress())


def in_namespace(rootfs: Path) -> None:
    """Inside mmdebstrap's namespace (root there): fetch the kernel package, configure a
    copy of the root filesystem without mmdebstrap's mounts, make the ext4 image from it
    (owners as the guest must see them) and compress it."""
    kernel_pkg = _kernel_package(rootfs)
    log.info(f"apt-get download {kernel_pkg}")
    archives = rootfs / "var/cache/apt/archives"
    run("chroot", rootfs, "sh", "-c",
        f"cd /var/cache/apt/archives && apt-get -q download {kernel_pkg}", env=APT_ENV)
    out, stage = rootfs / NS_OUT, rootfs / NS_STAGE
    remove_tree(out)
    remove_tree(stage)
    out.mkdir(parents=True)
    stage.mkdir(parents=True)
    (out / "kernel-deb").write_text(next(archives.glob(f"{kernel_pkg}_*.deb")).name)
    # A copy without mmdebstrap's mounts (/proc, /sys, device nodes) and without what it
    # put in place for the install only (it undoes those itself, after its hooks).
    skip = [f"--exclude=./{d}/*" for d in ("proc", "sys", "dev", "tmp")]
    run("sh", "-c", f"tar -C {shlex.quote(str(rootfs))} -cf - {' '.join(skip)} . | "
                    f"tar -C {shlex.quote(str(stage))} -xpf -")
    (stage / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    real = stage / "sbin/start-stop-daemon.REAL"
    if real.exists():
        real.replace(stage / "sbin/start-stop-daemon")
    configure(stage)
    build_reseed_library(rootfs, stage)
    log.info(f"rootfs after stripping: {du_mib(stage):.0f} MiB")
    shutil.copyfile(stage / "bin/busybox", out / "busybox")
    raw = out / "root.raw"
    log.info(f"mke2fs -t ext4 -d rootfs ({DISK_MIB} MiB, sparse)")
    run(tool("mke2fs", "e2fsprogs"), "-q", "-F", "-t", "ext4", "-L", "blankslate-root",
        "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", stage, raw,
        f"{DISK_MIB}M")
    remove_tree(stage)
    log.info("qemu-img convert -c (zstd)")
    run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-c",
        "-o", "compression_type=zstd,cluster_size=65536", "-m", "4", "-W", raw,
        out / "root.qcow2")
    raw.unlink()


def build_reseed_library(rootfs: Path, stage: Path) -> None:
    """Compile files/nss-reseed.c against the guest's own libc, in the build root (which
    gets the compiler; the image, made from the stage, does not)."""
    log.info("apt-get install gcc (build root only); gcc nss-reseed.c")
    run("chroot", rootfs, "apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0", "install", "gcc",
        "libc6-dev", env=APT_ENV)
    shutil.copyfile(FILES / "nss-reseed.c", rootfs / "tmp/nss-reseed.c")
    run("chroot", rootfs, "gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
        "-o", "/tmp/nss-reseed.so", "/tmp/nss-reseed.c", env=APT_ENV)
    write_file(stage / RESEED_LIBRARY, (rootfs / "tmp/nss-reseed.so").read_bytes(), 0o644)


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
    for p in (home, *home.rglob("*")):
        os.lchown(p, UID, UID)
    write_file(rootfs / "etc/hostname", "blankslate\n")
    write_file(rootfs / "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tblankslate\n"
               "::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    write_file(rootfs / "etc/resolv.conf", "")
    write_file(rootfs / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    write_file(rootfs / "etc/fstab", "# mounted by the initramfs and blankslate-rc\n")
    _link(rootfs / "sbin/init", "/bin/busybox")  # busybox init reads /etc/inittab
    _link(rootfs / "usr/local/lib/blankslate/udhcpc", "/bin/busybox")  # see files/network
    # qemu-ga's guest-set-time runs `hwclock -w` after setting the clock (and fails without
    # it). Writing the virtual RTC buys nothing (the app sets the clock after every restore)
    # and a real hwclock waits for a second boundary: ~1 s on every session start.
    _link(rootfs / "usr/sbin/hwclock", "/bin/true")
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


def build_initramfs(kdir: Path, busybox: Path, work: Path, out: Path) -> None:
    """Static busybox (the guest's busybox-static) + modules, as a gzip'd newc cpio."""
    root = work / "initramfs"
    remove_tree(root)
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "modules").mkdir(parents=True)
    shutil.copyfile(busybox, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
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
        "network_command": "/usr/local/sbin/blankslate-net",
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
    (out / "recipe.json").unlink(missing_ok=True)
    work = out / ".work"
    remove_tree(work)
    work.mkdir()
    log.progress("packages", 0.0)
    bootstrap(cache, work)
    log.progress("kernel", 0.7)
    kdir = unpack_kernel(cache, cache / "debs" / (work / "kernel-deb").read_text())
    shutil.copy2(next((kdir / "boot").glob("vmlinuz-*")), out / "vmlinuz")
    log.progress("initramfs", 0.75)
    build_initramfs(kdir, work / "busybox", work, out / "initrd.img")
    (work / "root.qcow2").rename(out / "root.qcow2")
    remove_tree(work)
    log.info(f"root.qcow2: {(out / 'root.qcow2').stat().st_size / 2**20:.0f} MiB")
    write_recipe(out)
    log.progress("done", 1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--in-namespace", type=Path, metavar="ROOTFS", help=argparse.SUPPRESS)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.in_namespace:  # mmdebstrap's customize hook (its output goes to our build log)
        try:
            in_namespace(args.in_namespace)
            return 0
        except (BuildError, OSError, StopIteration, subprocess.SubprocessError) as exc:
            print(f"{NAME}: error: {exc or type(exc).__name__}", file=sys.stderr, flush=True)
            return 1
    if args.out is None or args.cache is None:
        ap.error("--out and --cache are required")
    out: Path = args.out.resolve()
    cache: Path = args.cache.resolve()
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

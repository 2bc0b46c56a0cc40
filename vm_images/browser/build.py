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

What every recipe does the same way (kernel, modules, initramfs, disk, progress, log,
``recipe.json``, the command line) is the shared library ``vm_images/builder``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: see builder
from vm_images import builder as b

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
# Modules the guest needs from the generic kernel, loaded by the initramfs (dependencies
# are added from each module's ``depends=``). The root filesystem carries no modules.
# (vmgenid, which the guest also needs, is built into the kernel.)
MODULES = (
    "virtio_pci", "virtio_blk", "virtio_console", "virtio_rng", "virtio_net", "virtio_gpu",
    "virtio_input", "evdev", "crc32c_generic", "ext4",
)
# Paths dpkg never unpacks in the guest (and that are removed if already there).
EXCLUDED = (
    "/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
    "/usr/share/lintian/*", "/usr/share/linda/*", "/usr/share/bug/*",
)
KEPT = ("/usr/share/doc/*/copyright",)

APPEND = "console=hvc0 quiet loglevel=3 rdinit=/init net.ifnames=0 panic=-1 " \
         "vt.global_cursor_default=0"
DISK_MIB = 4096  # sparse; room for downloads and Firefox's profile in the session overlay
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

RECIPE = b.Recipe(
    name=NAME,
    append=APPEND,
    memory_mib=1536,
    cpus=2,
    display=(1280, 800),
    ready_command="/usr/local/bin/blankslate-ready",
    network_command="/usr/local/sbin/blankslate-net",
    open_url_command=("/usr/local/bin/blankslate-open",),
    # Firefox's empty document (between the old page and the new one's first paint).
    loading_color="#f9f9fb",
    clipboard_set_command=("/usr/local/bin/blankslate-clipboard", "set"),
    clipboard_get_command=("/usr/local/bin/blankslate-clipboard", "get"),
    downloads_dir=f"/home/{USER}/Downloads",
)


def du_mib(path: Path) -> float:
    return int(b.capture("du", "-sx", "--block-size=1", path).decode().split()[0]) / 2**20


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
        raise b.BuildError(
            f"no subordinate id range for '{user}' in {db}: add one with 'sudo usermod "
            f"--add-subuids 100000-165535 --add-subgids 100000-165535 {user}'")
    unshare = b.tool("unshare", "util-linux")
    try:
        b.capture(unshare, "--user", "--map-root-user", "true")
    except b.BuildError as exc:
        raise b.BuildError(
            "unprivileged user namespaces are disabled on this machine (needed to build the "
            "browser image without root): enable them with 'sudo sysctl -w "
            "kernel.unprivileged_userns_clone=1 user.max_user_namespaces=15000'") from exc


class MmdebstrapProgress:
    """Progress from mmdebstrap's ``I:`` lines (its phases, in order)."""

    PHASES = (("I: downloading packages", 0.05), ("I: extracting archives", 0.15),
              ("I: installing essential", 0.2), ("I: installing remaining", 0.3),
              ("I: running --customize-hook", 0.5))

    def __call__(self, line: str) -> None:
        for prefix, fraction in self.PHASES:
            if line.startswith(prefix):
                b.progress("packages", fraction)
                b.log.info(line.strip().removeprefix("I: "))


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
        b.tool("mmdebstrap", "mmdebstrap"), "--mode=auto", "--variant=minbase",
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
    b.log.info(f"mmdebstrap --variant=minbase {SUITE} "
               f"({len(PACKAGES)} packages and what they need)")
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '/usr/bin:/bin')}:/usr/sbin:/sbin"}
    b.run(*argv, env=env, on_line=MmdebstrapProgress())


def in_namespace(rootfs: Path) -> None:
    """Inside mmdebstrap's namespace (root there): fetch the kernel package, configure a
    copy of the root filesystem without mmdebstrap's mounts, make the ext4 image from it
    (owners as the guest must see them) and compress it."""
    deb = b.download_kernel(rootfs / "var/cache/apt/archives", chroot=rootfs)
    out, stage = rootfs / NS_OUT, rootfs / NS_STAGE
    b.remove(out)
    b.remove(stage)
    out.mkdir(parents=True)
    stage.mkdir(parents=True)
    (out / "kernel-deb").write_text(deb.name)
    # A copy without mmdebstrap's mounts (/proc, /sys, device nodes) and without what it
    # put in place for the install only (it undoes those itself, after its hooks).
    skip = [f"--exclude=./{d}/*" for d in ("proc", "sys", "dev", "tmp")]
    b.run("sh", "-c", f"tar -C {shlex.quote(str(rootfs))} -cf - {' '.join(skip)} . | "
                      f"tar -C {shlex.quote(str(stage))} -xpf -")
    (stage / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    real = stage / "sbin/start-stop-daemon.REAL"
    if real.exists():
        real.replace(stage / "sbin/start-stop-daemon")
    configure(stage)
    build_reseed_library(rootfs, stage)
    b.log.info(f"rootfs after stripping: {du_mib(stage):.0f} MiB")
    shutil.copyfile(stage / "bin/busybox", out / "busybox")
    b.make_disk(stage, out / "root.qcow2", size_mib=DISK_MIB, label="blankslate-root",
                compress=True)
    b.remove(stage)


def build_reseed_library(rootfs: Path, stage: Path) -> None:
    """Compile files/nss-reseed.c against the guest's own libc, in the build root (which
    gets the compiler; the image, made from the stage, does not)."""
    b.log.info("apt-get install gcc (build root only); gcc nss-reseed.c")
    b.run("chroot", rootfs, "apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0", "install", "gcc",
          "libc6-dev", env=b.APT_ENV)
    shutil.copyfile(FILES / "nss-reseed.c", rootfs / "tmp/nss-reseed.c")
    b.run("chroot", rootfs, "gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
          "-o", "/tmp/nss-reseed.so", "/tmp/nss-reseed.c", env=b.APT_ENV)
    b.write_file(stage / RESEED_LIBRARY, (rootfs / "tmp/nss-reseed.so").read_bytes(), 0o644)


def configure(rootfs: Path) -> None:
    """Guest-side files, the user, and stripping (idempotent: reruns on a cached rootfs)."""
    for src, dst, mode in GUEST_FILES:
        b.write_file(rootfs / dst, (FILES / src).read_bytes(), mode)
    if f"\n{USER}:" not in "\n" + (rootfs / "etc/passwd").read_text():
        b.run("chroot", rootfs, "useradd", "--create-home", "--uid", str(UID),
              "--user-group", "--groups", "video,input", "--shell", "/bin/sh", USER)
    home = rootfs / "home" / USER
    (home / "Downloads").mkdir(exist_ok=True)
    for p in (home, *home.rglob("*")):
        os.lchown(p, UID, UID)
    b.write_file(rootfs / "etc/hostname", "blankslate\n")
    b.write_file(rootfs / "etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tblankslate\n"
                 "::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    b.write_file(rootfs / "etc/resolv.conf", "")
    b.write_file(rootfs / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    b.write_file(rootfs / "etc/fstab", "# mounted by the initramfs and blankslate-rc\n")
    b.symlink(rootfs / "sbin/init", "/bin/busybox")  # busybox init reads /etc/inittab
    b.symlink(rootfs / "usr/local/lib/blankslate/udhcpc", "/bin/busybox")  # see files/network
    # qemu-ga's guest-set-time runs `hwclock -w` after setting the clock (and fails without
    # it). Writing the virtual RTC buys nothing (the app sets the clock after every restore)
    # and a real hwclock waits for a second boundary: ~1 s on every session start.
    b.symlink(rootfs / "usr/sbin/hwclock", "/bin/true")
    strip(rootfs)


def strip(rootfs: Path) -> None:
    """Remove what the guest never reads: docs, locales, apt's lists and caches, logs."""
    for pattern in EXCLUDED:
        for p in rootfs.glob(pattern.lstrip("/")):
            if p.parent.name == "doc" and p.is_dir() and not p.is_symlink():
                for child in p.iterdir():  # keep the licences
                    if child.name != "copyright":
                        b.remove(child)
            else:
                b.remove(p)
    for d in ("var/lib/apt/lists", "var/cache/apt", "var/log", "tmp"):
        for child in (rootfs / d).glob("*"):
            b.remove(child)
    for p in rootfs.glob("var/cache/debconf/*-old"):
        b.remove(p)


def build(out: Path, cache: Path, work: Path) -> None:
    b.progress("packages", 0.0)
    bootstrap(cache, work)
    b.progress("kernel", 0.7)
    kdir = b.unpack_kernel(cache / "debs" / (work / "kernel-deb").read_text(), cache)
    b.install_kernel(kdir, out / "vmlinuz", pvh=False)
    b.progress("initramfs", 0.75)
    b.build_initramfs(kdir, MODULES, busybox=work / "busybox",
                      init=(FILES / "initramfs-init").read_bytes(), root=work / "initramfs",
                      out=out / "initrd.img")
    (work / "root.qcow2").rename(out / "root.qcow2")
    b.log.info(f"root.qcow2: {(out / 'root.qcow2').stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    sys.exit(b.main(RECIPE, build, description=__doc__.splitlines()[0],
                    in_namespace=in_namespace))

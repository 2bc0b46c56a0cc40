"""Recipe for the `tiny` test guest: busybox + qemu-ga on Debian's generic kernel, in seconds.

    python3 vm_images/tiny/build.py --out OUTDIR --cache CACHEDIR

Inputs are Debian packages only: the kernel behind ``linux-image-amd64`` (fetched with
``apt-get download`` into CACHEDIR and unpacked with ``dpkg-deb -x``, never installed on the
host; the generic flavour, not cloud, because only it has virtio-gpu and fbcon, so the guest
shows a console on its display), the host's busybox-static and the host's qemu-ga with the
libraries ``ldd`` names. The root disk is ext4 made by ``mke2fs -d`` (no loop mounts), then
converted to qcow2.

Boot: the initramfs loads the virtio/ext4/drm modules in dependency order, mounts /dev/vda
and switches root into it; busybox init on the disk runs qemu-ga on the virtio-serial port
named ``org.qemu.guest_agent.0`` and a root shell on tty1 (the virtio-gpu console), both
respawned. Kernel errors also go to the virtio console hvc0.

Output (OUTDIR): vmlinuz, initrd.img, root.qcow2, then recipe.json last (its presence means
the build is complete). Progress: one JSON object per line on stdout; log on stderr.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

KERNEL_META_PACKAGE = "linux-image-amd64"
AGENT_PORT = "org.qemu.guest_agent.0"
BUSYBOX = "/bin/busybox"  # busybox-static: no libraries to copy
QEMU_GA_CANDIDATES = ("/usr/sbin/qemu-ga", "/usr/bin/qemu-ga")  # Debian ships /usr/sbin
DISK_MIB = 1536  # sparse; the keep/discard benchmark writes up to 1 GiB into a session
MEMORY_MIB = 256

# Wanted modules; their dependencies are added and everything is loaded in dependency order.
# Storage first, so that the root disk could be mounted even if a display module misbehaved.
MODULES = (
    "virtio_pci",  # the PCI transport every virtio device below sits on
    "virtio_blk",  # /dev/vda, the root disk
    "crc32c_generic",  # ext4/jbd2 metadata checksums (a soft dependency, not in depends=)
    "ext4",
    "virtio_console",  # virtio-serial (the agent's port) and hvc0
    "virtio_rng",  # seeds the guest RNG from the host
    "virtio_gpu",  # DRM + fbdev: fbcon puts tty1 on the display
    "virtio_input",  # virtio keyboard/tablet feed the VT directly (no evdev needed)
    "virtio_net",  # tests attach a NIC (passt) and run udhcpc
)

# `quiet loglevel=3`: fbcon scrolling text costs real time under TCG. hvc0 is listed first so
# that tty1, listed last, is /dev/console; the hvc0 console attaches when virtio_console loads.
# The crypto self-tests (cryptomgr, and the KDF one, whose initcall does nothing else) cost
# ~1.3 s of boot under TCG, and nothing here depends on them.
APPEND = ("quiet loglevel=3 console=hvc0 console=tty1 panic=-1 "
          "cryptomgr.notests initcall_blacklist=crypto_kdf108_init")

INITRAMFS_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
while read -r m; do insmod "/lib/modules/$m" || echo "tiny: insmod $m failed"; done < /modules
# virtio-blk probes asynchronously: wait up to 5 s for the disk.
i=0
while [ ! -b /dev/vda ] && [ $i -lt 500 ]; do usleep 10000; i=$((i + 1)); done
if ! mount -t ext4 -o rw,noatime /dev/vda /newroot; then
    echo "tiny: cannot mount the root disk /dev/vda" | tee /dev/hvc0
    sleep 5
    poweroff -f
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""

# busybox init: it gives tty1 its controlling terminal and respawns what dies.
INITTAB = """::sysinit:/etc/rc
tty1::respawn:-/bin/sh
::respawn:/sbin/tiny-agent
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
"""

RC = """#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
# The initramfs moved its devtmpfs here; mount one only if booted without it.
grep -q " /dev " /proc/mounts || mount -t devtmpfs dev /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/qga
hostname -F /etc/hostname
# Only emergencies on the display from now on; the shell there is for the user.
echo 1 > /proc/sys/kernel/printk
"""

# No udev, so no /dev/virtio-ports/NAME link: find /dev/vportNpM by the port's name.
AGENT = f"""#!/bin/sh
for d in /sys/class/virtio-ports/*; do
    read -r name < "$d/name" 2>/dev/null || continue
    if [ "$name" = "{AGENT_PORT}" ]; then
        exec qemu-ga -m virtio-serial -p "/dev/${{d##*/}}" -t /run/qga
    fi
done
echo "tiny: no virtio-serial port named {AGENT_PORT}" > /dev/hvc0
sleep 1  # busybox init respawns us; do not spin
"""

# busybox udhcpc calls this to apply a lease (passt answers DHCP).
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
    deconfig) ifconfig "$interface" 0.0.0.0 up ;;
    bound|renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
        for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
        : > /etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done ;;
esac
"""

# The app runs this after every restore: the lease in a snapshot is the one of the network
# the host had when it was saved (the browser image has the same, blankslate-net).
NETWORK = """#!/bin/sh
[ -e /sys/class/net/eth0 ] || exit 0
killall udhcpc 2>/dev/null
ip -4 addr flush dev eth0
ip link set eth0 down
ip link set eth0 up
exec udhcpc -i eth0 -n -q -f -t 10 -T 1 -A 1 -s /etc/udhcpc.script
"""

# The tiny guest has no GUI and so no clipboard: this stands in for one, with the interface
# of the browser image's wl-copy/wl-paste wrapper, so the app's clipboard code (and its
# policy checks) can be tested for real. The text lives in a root-only file on /run (tmpfs).
CLIPBOARD = """#!/bin/sh
f=/run/blankslate-clipboard
umask 077
case "$1" in
    set) cat > "$f.tmp" && mv -f "$f.tmp" "$f" ;;
    get) if [ -f "$f" ]; then cat "$f"; fi ;;
    *) echo "usage: blankslate-clipboard set|get" >&2; exit 2 ;;
esac
"""

PROFILE = """export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
PS1='tiny# '
"""

ETC_FILES = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "group": "root:x:0:\n",
    "shadow": "root:*:19000:0:99999:7:::\n",
    "hostname": "tiny\n",
    "hosts": "127.0.0.1 localhost\n127.0.1.1 tiny\n",
    "profile": PROFILE,
    "inittab": INITTAB,
}


class BuildError(Exception):
    """A build step failed; the message is the one line shown to the user."""


def progress(phase: str, fraction: float | None) -> None:
    print(json.dumps({"phase": phase, "fraction": fraction}), flush=True)


def log(msg: str) -> None:
    print(f"tiny: {msg}", file=sys.stderr, flush=True)


def run(*argv: str, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    """Run a command; on failure raise BuildError with the last line of its stderr."""
    try:
        proc = subprocess.run(argv, cwd=cwd, input=stdin, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise BuildError(f"{argv[0]} not found") from exc
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BuildError(f"{argv[0]} failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return proc.stdout


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


# ---------------------------------------------------------------------------- kernel


def resolve_kernel() -> tuple[str, str]:
    """(package, version) of the kernel that ``linux-image-amd64`` currently depends on."""
    info = run("apt-cache", "show", "--no-all-versions", KERNEL_META_PACKAGE).decode()
    m = re.search(r"^Depends:.*?\b(linux-image-[\w.+-]+) \(= ([^)]+)\)", info, re.MULTILINE)
    if not m:
        raise BuildError(f"cannot find the kernel package {KERNEL_META_PACKAGE} depends on")
    return m.group(1), m.group(2)


def download_kernel(cache: Path, pkg: str, version: str) -> Path:
    """The .deb in the cache, downloaded (``apt-get download``) unless already there."""
    deb = cache / f"{pkg}_{version.replace(':', '%3a')}_amd64.deb"
    if not deb.exists():
        progress("downloading kernel", None)
        log(f"downloading {pkg} {version}")
        run("apt-get", "download", f"{pkg}={version}", cwd=cache)
    if not deb.exists():
        raise BuildError(f"apt-get download did not produce {deb.name}")
    return deb


def unpack_kernel(deb: Path, dest: Path) -> None:
    """``dpkg-deb -x`` into ``dest`` atomically (a half-unpacked tree is never reused)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    run("dpkg-deb", "-x", str(deb), str(tmp))
    tmp.rename(dest)


def fetch_kernel(cache: Path) -> Path:
    """The unpacked kernel package, from the cache or downloaded; stale apt lists are
    refreshed once (a new list can name a different kernel, so resolve again)."""
    for attempt in (1, 2):
        try:
            pkg, version = resolve_kernel()
            tree = cache / f"{pkg}_{version}"
            if not tree.is_dir():
                unpack_kernel(download_kernel(cache, pkg, version), tree)
            return tree
        except BuildError as exc:
            if attempt == 2:
                return cached_kernel_or_raise(cache, exc)
            log(f"{exc}; running apt-get update and trying again")
            progress("updating package lists", None)
            try:
                run("apt-get", "update", "-qq")
            except BuildError as update_exc:
                return cached_kernel_or_raise(cache, update_exc)
    raise AssertionError("unreachable")


def cached_kernel_or_raise(cache: Path, exc: BuildError) -> Path:
    """Offline or apt broken: an already unpacked kernel is better than no build."""
    trees = sorted(p for p in cache.glob("linux-image-*_*") if p.is_dir()
                   and not p.name.endswith(".tmp"))
    if not trees:
        raise exc
    log(f"{exc}; using the cached {trees[-1].name}")
    return trees[-1]


def has_pvh_note(elf: bytes) -> bool:
    """Does this ELF64 kernel carry XEN_ELFNOTE_PHYS32_ENTRY (QEMU's PVH direct boot)?"""
    if elf[:5] != b"\x7fELF\x02":
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf,
                                                                  phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz]
            if name == b"Xen\x00" and n_type == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def boot_kernel(tree: Path) -> Path:
    """The kernel file to boot, cached in the unpacked tree.

    Debian's bzImage is XZ-compressed, and under TCG its decompressor alone takes ~7 s of
    a cold boot. The embedded vmlinux is an ELF with a PVH entry note, which QEMU's
    ``-kernel`` boots directly, so ship that (66 MB) when it is there, else the bzImage.
    """
    pvh = tree / "vmlinux-pvh"
    if pvh.exists():
        return pvh
    bzimage = next((tree / "boot").glob("vmlinuz-*"))
    data = bzimage.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        log("kernel is not XZ-compressed; booting the bzImage")
        return bzimage
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
    if not has_pvh_note(elf):
        log("kernel has no PVH entry; booting the bzImage")
        return bzimage
    tmp = pvh.with_suffix(".tmp")
    tmp.write_bytes(elf)
    tmp.rename(pvh)
    return pvh


# ---------------------------------------------------------------------------- modules


def module_index(tree: Path) -> dict[str, Path]:
    """Module name (dashes as underscores, as the kernel names them) -> .ko file."""
    moddir = next((tree / "lib" / "modules").iterdir())
    return {p.name.split(".ko")[0].replace("-", "_"): p for p in moddir.rglob("*.ko*")}


def read_module(path: Path) -> bytes:
    """The module's ELF bytes; compressed modules are decompressed now, since busybox
    insmod in the initramfs cannot."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        raise BuildError(f"{path.name}: zstd-compressed modules are not supported")
    return data


def module_depends(elf: bytes) -> list[str]:
    """The ``depends=`` field of the module's .modinfo. (Debian's package has no
    modules.dep: depmod generates it at install time, and this is what depmod reads.)"""
    m = re.search(rb"\x00depends=([\w,-]*)\x00", elf)
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d] if m else []


def modules_in_load_order(index: dict[str, Path], wanted: tuple[str, ...]) -> list[str]:
    """``wanted`` plus dependencies, each after everything it depends on."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in index:
            raise BuildError(f"kernel module {name} not found (built in or renamed?)")
        for dep in module_depends(read_module(index[name])):
            visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


# ---------------------------------------------------------------------------- file trees


def cpio_gz(root: Path, out: Path) -> None:
    """A gzip'd newc cpio of ``root`` (sorted, reproducible: same inputs, same bytes)."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = b"".join(n.encode() + b"\x00" for n in [".", *names])
    archive = run("cpio", "--null", "--create", "--format=newc", "--reproducible", "--quiet",
                  cwd=root, stdin=listing)
    out.write_bytes(gzip.compress(archive, compresslevel=6, mtime=0))


def build_initramfs(root: Path, index: dict[str, Path], modules: list[str], out: Path) -> None:
    for d in ("bin", "proc", "sys", "dev", "newroot", "lib/modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for name in modules:
        (root / "lib" / "modules" / f"{name}.ko").write_bytes(read_module(index[name]))
    write(root / "modules", "".join(f"{name}.ko\n" for name in modules))
    write(root / "init", INITRAMFS_INIT, 0o755)
    cpio_gz(root, out)


def qemu_ga_path() -> str:
    for candidate in QEMU_GA_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise BuildError("qemu-ga not found (install qemu-guest-agent)")


def copy_with_libraries(binary: str, root: Path) -> None:
    """Copy ``binary``, every library ``ldd`` lists and the ELF interpreter (which ldd
    lists as an absolute path) into ``root`` at the same paths."""
    files = [binary]
    for line in run("ldd", binary).decode().splitlines():
        m = re.search(r"(/\S+) \(0x[0-9a-f]+\)", line)
        if m:
            files.append(m.group(1))
    for f in files:
        dst = root / f.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(f).resolve(), dst)  # resolve: copy the file, not the symlink
        dst.chmod(0o755)


def install_busybox(root: Path) -> None:
    """busybox plus a symlink per applet (this includes /sbin/hwclock: qemu-ga's
    guest-set-time runs ``hwclock -w`` and fails if it is missing)."""
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in run(BUSYBOX, "--list-full").decode().split():
        link = root / applet
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")


def build_rootfs(root: Path) -> None:
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "tmp",
              "root/Downloads", "var/tmp", "lib"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "var" / "tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
    (root / "var" / "run").symlink_to("/run")
    install_busybox(root)
    copy_with_libraries(qemu_ga_path(), root)
    for name, text in ETC_FILES.items():
        write(root / "etc" / name, text, 0o600 if name == "shadow" else 0o644)
    write(root / "etc" / "rc", RC, 0o755)
    write(root / "etc" / "udhcpc.script", UDHCPC_SCRIPT, 0o755)
    write(root / "sbin" / "tiny-agent", AGENT, 0o755)
    write(root / "sbin" / "blankslate-net", NETWORK, 0o755)
    write(root / "usr" / "bin" / "blankslate-clipboard", CLIPBOARD, 0o755)


def make_disk(rootfs: Path, raw: Path, out: Path) -> None:
    """ext4 from a directory (no loop mount), then qcow2 (sparse: zeros take no space).

    Inode tables and the journal are initialised now, or the guest's ext4lazyinit thread
    would zero them after every cold boot, burning TCG time and writing into the overlay.
    """
    run("mke2fs", "-q", "-t", "ext4", "-L", "tiny-root", "-m", "0",
        "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d", str(rootfs), str(raw),
        f"{DISK_MIB}M")
    run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out))


# ---------------------------------------------------------------------------- main


def recipe() -> dict[str, object]:
    return {
        "name": "tiny",
        "kernel": "vmlinuz",
        "initrd": "initrd.img",
        "disk": "root.qcow2",
        "append": APPEND,
        "memory_mib": MEMORY_MIB,
        "cpus": 1,
        "agent_port": AGENT_PORT,
        "ready_command": "true",
        "network_command": "/sbin/blankslate-net",
        "display": {"width": 1024, "height": 768},
        "downloads_dir": "/root/Downloads",
        "clipboard_set_command": ["/usr/bin/blankslate-clipboard", "set"],
        "clipboard_get_command": ["/usr/bin/blankslate-clipboard", "get"],
    }


def build(out: Path, cache: Path, work: Path) -> None:
    progress("kernel", 0.0)
    tree = fetch_kernel(cache)
    progress("unpacking kernel", 0.3)
    shutil.copyfile(boot_kernel(tree), out / "vmlinuz")
    progress("initramfs", 0.45)
    index = module_index(tree)
    modules = modules_in_load_order(index, MODULES)
    log("modules: " + " ".join(modules))
    build_initramfs(work / "initramfs", index, modules, out / "initrd.img")
    progress("root filesystem", 0.6)
    build_rootfs(work / "rootfs")
    progress("disk image", 0.75)
    make_disk(work / "rootfs", work / "root.raw", out / "root.qcow2")
    # Last: its presence tells the image store that the build is complete.
    (out / "recipe.json").write_text(json.dumps(recipe(), indent=2) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description="Build the tiny test guest.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True)
    args = ap.parse_args()
    out: Path = args.out.resolve()
    cache: Path = args.cache.resolve()
    work = out / ".work"
    started = time.monotonic()
    try:
        out.mkdir(parents=True, exist_ok=True)
        cache.mkdir(parents=True, exist_ok=True)
        (out / "recipe.json").unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        build(out, cache, work)
    except (BuildError, OSError, lzma.LZMAError, StopIteration) as exc:
        print(f"tiny: error: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress("done", 1.0)
    log(f"built in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

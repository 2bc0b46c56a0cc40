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

What every recipe does the same way (kernel, modules, initramfs, disk, progress, log,
``recipe.json``, the command line) is the shared library ``vm_images/builder``.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: see builder
from vm_images import builder as b

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
while read -r m; do insmod "/lib/modules/$m" || echo "tiny: insmod $m failed"; done < /modules.load
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

RECIPE = b.Recipe(
    name="tiny",
    append=APPEND,
    memory_mib=MEMORY_MIB,
    ready_command="true",
    network_command="/sbin/blankslate-net",
    downloads_dir="/root/Downloads",
    clipboard_set_command=("/usr/bin/blankslate-clipboard", "set"),
    clipboard_get_command=("/usr/bin/blankslate-clipboard", "get"),
)


def fetch_kernel(cache: Path) -> Path:
    """The unpacked kernel package, from the cache or downloaded with the host's apt; stale
    package lists are refreshed once (a new list can name a different kernel, so resolve
    again), and offline an already unpacked kernel is better than no build."""
    for attempt in (1, 2):
        try:
            return b.unpack_kernel(b.download_kernel(cache), cache)
        except b.BuildError as exc:
            if attempt == 2:
                return cached_kernel_or_raise(cache, exc)
            b.log.info(f"{exc}; running apt-get update and trying again")
            b.progress("updating package lists", None)
            try:
                b.run("apt-get", "update", "-qq")
            except b.BuildError as update_exc:
                return cached_kernel_or_raise(cache, update_exc)
    raise AssertionError("unreachable")


def cached_kernel_or_raise(cache: Path, exc: b.BuildError) -> Path:
    tree = b.cached_kernel(cache)
    if tree is None:
        raise exc
    b.log.info(f"{exc}; using the cached {tree.name}")
    return tree


def qemu_ga_path() -> str:
    for candidate in QEMU_GA_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise b.BuildError("qemu-ga not found (install qemu-guest-agent)")


def copy_with_libraries(binary: str, root: Path) -> None:
    """Copy ``binary``, every library ``ldd`` lists and the ELF interpreter (which ldd
    lists as an absolute path) into ``root`` at the same paths."""
    files = [binary]
    for line in b.capture("ldd", binary).decode().splitlines():
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
    for applet in b.capture(BUSYBOX, "--list-full").decode().split():
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
    b.symlink(root / "var" / "run", "/run")
    install_busybox(root)
    copy_with_libraries(qemu_ga_path(), root)
    for name, text in ETC_FILES.items():
        b.write_file(root / "etc" / name, text, 0o600 if name == "shadow" else 0o644)
    b.write_file(root / "etc" / "rc", RC, 0o755)
    b.write_file(root / "etc" / "udhcpc.script", UDHCPC_SCRIPT, 0o755)
    b.write_file(root / "sbin" / "tiny-agent", AGENT, 0o755)
    b.write_file(root / "sbin" / "blankslate-net", NETWORK, 0o755)
    b.write_file(root / "usr" / "bin" / "blankslate-clipboard", CLIPBOARD, 0o755)


def build(out: Path, cache: Path, work: Path) -> None:
    b.progress("kernel", 0.0)
    tree = fetch_kernel(cache)
    b.progress("unpacking kernel", 0.3)
    b.install_kernel(tree, out / "vmlinuz", pvh=True)
    b.progress("initramfs", 0.45)
    b.build_initramfs(tree, MODULES, busybox=Path(BUSYBOX), init=INITRAMFS_INIT,
                      root=work / "initramfs", out=out / "initrd.img")
    b.progress("root filesystem", 0.6)
    build_rootfs(work / "rootfs")
    b.progress("disk image", 0.75)
    b.make_disk(work / "rootfs", out / "root.qcow2", size_mib=DISK_MIB, label="tiny-root",
                compress=False)


if __name__ == "__main__":
    sys.exit(b.main(RECIPE, build, description="Build the tiny test guest."))

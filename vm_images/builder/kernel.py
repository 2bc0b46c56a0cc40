"""The guest kernel: Debian's generic kernel package, its modules, and the busybox initramfs.

The kernel is never installed anywhere: its package is fetched with ``apt-get download`` and
unpacked with ``dpkg-deb -x`` into the build cache. The initramfs carries busybox and the
modules a recipe names plus their dependencies, decompressed (busybox ``insmod`` cannot
decompress) and listed in load order in ``/modules.load`` for the recipe's ``/init``.
"""

from __future__ import annotations

import gzip
import lzma
import re
import shlex
import shutil
import struct
from pathlib import Path

from .commands import capture, run
from .files import atomic_write, remove, write_cpio_gz, write_file
from .report import BuildError, log

KERNEL_META = "linux-image-amd64"  # generic flavour: only it has virtio-gpu and fbcon
# The environment of commands run in a chroot (the host's would leak into the guest tree).
APT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8",
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
}
MODULE_DIRS = ("lib/modules", "usr/lib/modules")  # where a kernel package keeps its modules


# ---------------------------------------------------------------------------- the package


def download_kernel(directory: Path, chroot: Path | None = None) -> Path:
    """The .deb of the kernel that ``linux-image-amd64`` depends on now, in ``directory``
    (``apt-get download`` unless it is there already). With ``chroot``, apt runs in that
    root filesystem (its package lists) and ``directory`` lies inside it."""
    prefix = ["chroot", str(chroot)] if chroot is not None else []
    info = capture(*prefix, "apt-cache", "show", "--no-all-versions", KERNEL_META).decode()
    m = re.search(r"^Depends:.*?\b(linux-image-[\w.+-]+) \(= ([^)]+)\)", info, re.MULTILINE)
    if not m:
        raise BuildError(f"cannot find the kernel package {KERNEL_META} depends on")
    pkg, version = m.groups()
    deb = directory / f"{pkg}_{version.replace(':', '%3a')}_amd64.deb"
    if not deb.exists():
        log.info(f"apt-get download {pkg} {version}")
        where = Path("/", deb.parent.relative_to(chroot)) if chroot is not None else deb.parent
        script = f"cd {shlex.quote(str(where))} && exec apt-get -q download "
        run(*prefix, "sh", "-c", script + shlex.quote(f"{pkg}={version}"),
            env=APT_ENV if chroot is not None else None)
    if not deb.exists():
        raise BuildError(f"apt-get download did not produce {deb.name}")
    return deb


def unpack_kernel(deb: Path, cache: Path) -> Path:
    """The kernel package's files (``boot/vmlinuz-*``, the modules), unpacked into
    ``cache/kernel-<package file>`` by ``dpkg-deb -x`` atomically (a half-unpacked tree is
    never reused); trees of other kernels unpacked there before are removed."""
    kdir = cache / ("kernel-" + deb.name.removesuffix(".deb"))
    if not kdir.is_dir():
        tmp = kdir.with_name(kdir.name + ".tmp")
        remove(tmp)
        run("dpkg-deb", "-x", deb, tmp)
        tmp.rename(kdir)
    for old in cache.glob("kernel-*"):
        if old != kdir:
            remove(old)
    return kdir


def cached_kernel(cache: Path) -> Path | None:
    """The kernel last unpacked into ``cache`` (for building offline), if any."""
    trees = sorted(p for p in cache.glob("kernel-*") if p.is_dir()
                   and not p.name.endswith(".tmp"))
    return trees[-1] if trees else None


# ---------------------------------------------------------------------------- the kernel file


def install_kernel(kdir: Path, out: Path, *, pvh: bool) -> None:
    """Copy the kernel to boot into ``out``: the bzImage, or with ``pvh`` the ELF inside it.

    Debian's bzImage is XZ-compressed, and under TCG its decompressor alone takes ~7 s of a
    cold boot. The embedded vmlinux is an ELF with a PVH entry note, which QEMU's ``-kernel``
    boots directly (66 MB; extracted once, kept in ``kdir``). A kernel without that note, or
    not XZ-compressed, is shipped as the bzImage.
    """
    bzimage = next((kdir / "boot").glob("vmlinuz-*"))
    shutil.copyfile(_pvh_kernel(kdir, bzimage) if pvh else bzimage, out)


def _pvh_kernel(kdir: Path, bzimage: Path) -> Path:
    pvh = kdir / "vmlinux-pvh"
    if pvh.exists():
        return pvh
    data = bzimage.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        log.info("kernel is not XZ-compressed; booting the bzImage")
        return bzimage
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
    if not _has_pvh_note(elf):
        log.info("kernel has no PVH entry; booting the bzImage")
        return bzimage
    atomic_write(pvh, elf)
    return pvh


def _has_pvh_note(elf: bytes) -> bool:
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


# ---------------------------------------------------------------------------- modules


def module_index(kdir: Path) -> dict[str, Path]:
    """Module name (dashes as underscores, as the kernel names them) -> its .ko file."""
    return {p.name.split(".ko")[0].replace("-", "_"): p
            for d in MODULE_DIRS for p in (kdir / d).rglob("*.ko*")}


def read_module(path: Path) -> bytes:
    """The module's ELF bytes, decompressed if it is ``.ko.xz`` or ``.ko.gz``."""
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
    """``wanted`` plus their dependencies, each after everything it depends on. A module
    that is not there (built in, renamed or dropped by a new kernel) is an error: the
    recipe names only modules, never built-in drivers."""
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


def build_initramfs(kdir: Path, modules: tuple[str, ...], *, busybox: Path, init: str | bytes,
                    root: Path, out: Path) -> None:
    """The initramfs ``out``, built in ``root``: ``/bin/busybox`` (static), ``/init``, the
    ``modules`` and their dependencies as ``/lib/modules/<name>.ko`` and their file names in
    load order, one a line, in ``/modules.load``."""
    remove(root)
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib/modules"):
        (root / d).mkdir(parents=True, exist_ok=True)
    write_file(root / "bin" / "busybox", busybox.read_bytes(), 0o755)
    index = module_index(kdir)
    order = modules_in_load_order(index, modules)
    log.info("initramfs modules: " + " ".join(order))
    for name in order:
        write_file(root / "lib" / "modules" / f"{name}.ko", read_module(index[name]))
    write_file(root / "modules.load", "".join(f"{name}.ko\n" for name in order))
    write_file(root / "init", init, 0o755)
    write_cpio_gz(root, out)
    remove(root)

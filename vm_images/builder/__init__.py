"""The image-builder library every recipe's ``build.py`` uses (``vm_images/<recipe>/build.py``).

A recipe holds only what is its own (packages, guest files, configuration steps, constants);
everything two recipes would otherwise each write is here, once:

- ``report``: ``BuildError``, the progress protocol the image store parses (one JSON object a
  line on stdout) and the build log (stderr and ``OUTDIR/build.log``);
- ``commands``: ``run`` (long work, output into the log), ``capture`` (queries), ``tool``
  (host tools in the sbin directories), stopping the running command on SIGTERM;
- ``files``: plain and atomic writes, removal, symlinks, the gzip'd newc cpio writer, the ext4
  root disk (``mke2fs -d``) converted to qcow2;
- ``kernel``: the Debian generic kernel (resolve, download, unpack, PVH ``vmlinux``), its
  modules (index, decompression, dependencies, strict load order) and the busybox initramfs;
- ``recipe``: ``recipe.json``, with exactly the keys the app reads;
- ``main``: the command line (``--out``, ``--cache``, ``--in-namespace``) and the order every
  build follows (``recipe.json`` last: a directory holding it is complete).

The recipes run as scripts (``python3 build.py --out OUT --cache CACHE``), so each puts the
directory above ``vm_images`` on ``sys.path`` and imports ``vm_images.builder``. The image store
hashes this directory with each recipe's own (``recipe_digest``): a change here rebuilds every
image. Standard library only.
"""

from __future__ import annotations

from .commands import capture, run, tool
from .files import atomic_write, make_disk, remove, symlink, write_cpio_gz, write_file
from .kernel import (
    APT_ENV,
    build_initramfs,
    cached_kernel,
    download_kernel,
    install_kernel,
    modules_in_load_order,
    unpack_kernel,
)
from .main import main
from .recipe import Recipe, write_recipe
from .report import BuildError, log, progress

__all__ = [
    "APT_ENV",
    "BuildError",
    "Recipe",
    "atomic_write",
    "build_initramfs",
    "cached_kernel",
    "capture",
    "download_kernel",
    "install_kernel",
    "log",
    "main",
    "make_disk",
    "modules_in_load_order",
    "progress",
    "remove",
    "run",
    "symlink",
    "tool",
    "unpack_kernel",
    "write_cpio_gz",
    "write_file",
    "write_recipe",
]

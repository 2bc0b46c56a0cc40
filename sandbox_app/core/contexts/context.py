"""Contexts: named VMs (personal, work, …), each with its own profile, disk and snapshot point.

Profile: ``config/contexts/NAME.toml`` (color, image, memory, network, exit default,
clipboard policy).
Data: ``data/contexts/NAME/`` holding the context's encrypted layers, its saved RAM state and
``current.json``, the manifest naming the context's current snapshot point. The manifest is
switched atomically, so a context is always either its old or its new state.

Over 400 lines as one idea: what a context is on disk (profile, manifest, their one reader
and writer each, and the store that lists them, broken ones included).
"""

from __future__ import annotations

import builtins
import fcntl
import ipaddress
import json
import os
import re
import time
import tomllib
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from ..errors import BlankSlateError, NotFoundError, UsageError
from ..guest import ClipboardPolicy
from ..images import RECIPES
from ..storage import (
    Paths,
    atomic_write_bytes,
    atomic_write_json,
    erase_tree,
    private_dir,
    validate_name,
)

_COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")
DEFAULT_CONTEXTS = {"personal": "#2e86de", "work": "#e67e22"}
DEFAULT_IMAGE = "browser"
# What the address bar does with text that is not an address: a search engine that does not
# profile its users. ``%s`` is replaced by the URL-encoded text.
DEFAULT_SEARCH = "https://duckduckgo.com/?q=%s"
MAX_DNS = 3  # what DHCP hands a busybox resolver (glibc reads at most three)


def parse_dns(value: object) -> tuple[str, ...]:
    """``"host"`` (the host's resolvers, through passt) → ``()``; else one or more IP
    addresses (a string, comma-separated, or a list)."""
    if value in ("host", "", None, ()):
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or len(items) > MAX_DNS:
        raise UsageError(f"dns must be 'host' or 1-{MAX_DNS} IP addresses")
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_address(str(item).strip())))
        except ValueError:
            raise UsageError(f"dns: '{str(item)[:40]}' is not an IP address") from None
    return tuple(out)


class Network(Enum):
    INTERNET = "internet"  # the public internet only (the egress guard)
    INTERNET_LAN = "internet+lan"  # and the LAN (a printer, a router's page); never this host
    NONE = "none"

    @property
    def online(self) -> bool:
        return self is not Network.NONE


class DownloadsTo(Enum):
    """Where the browser's downloads land: the session (thrown away with it, unless moved
    or saved out) or the context's persistent folder (``Persistent/Downloads``)."""

    SESSION = "session"
    PERSISTENT = "persistent"


class ExitDefault(Enum):
    ASK = "ask"
    KEEP = "keep"
    DISCARD = "discard"


@dataclass
class Profile:
    """A context's settings (the user edits these)."""

    name: str
    image: str = DEFAULT_IMAGE
    color: str = "#2e86de"
    memory_mib: int | None = None  # None: the image's default
    network: Network = Network.INTERNET
    on_exit: ExitDefault = ExitDefault.ASK
    clipboard: ClipboardPolicy = ClipboardPolicy.HOST_TO_GUEST
    dns: tuple[str, ...] = ()  # empty: the host's resolvers
    search: str = DEFAULT_SEARCH
    data_mib: int = 1024  # the persistent folder's size (sparse); 0: none
    downloads: DownloadsTo = DownloadsTo.SESSION
    created_at: float = field(default_factory=time.time)

    def validate(self) -> Profile:
        validate_name(self.name, "context name")
        validate_name(self.image, "image name")
        if not _COLOR_RE.fullmatch(self.color):
            raise UsageError(f"invalid color '{self.color}': use #RRGGBB")
        if self.memory_mib is not None and not 64 <= self.memory_mib <= 65536:
            raise UsageError("memory must be between 64 and 65536 MiB")
        if self.data_mib != 0 and not 16 <= self.data_mib <= 16 * 1024 * 1024:
            raise UsageError("the persistent folder must be 0 (none) or 16 MiB to 16 TiB")
        if self.downloads is DownloadsTo.PERSISTENT and self.data_mib == 0:
            raise UsageError("downloads can go to the persistent folder only in a context "
                             "that has one (its size is 0)")
        self.dns = parse_dns(self.dns)
        if (not self.search.startswith(("https://", "http://")) or "%s" not in self.search
                or len(self.search) > 512 or any(ord(c) < 0x21 for c in self.search)):
            raise UsageError("search must be an http(s) URL with %s where the words go")
        return self

    def to_toml(self) -> bytes:
        d: dict[str, Any] = asdict(self)
        d["network"] = self.network.value
        d["on_exit"] = self.on_exit.value
        d["clipboard"] = self.clipboard.value
        d["downloads"] = self.downloads.value
        d["dns"] = list(self.dns) if self.dns else "host"
        if d["memory_mib"] is None:
            del d["memory_mib"]
        return tomli_w.dumps(d).encode()

    @classmethod
    def from_toml(cls, name: str, data: bytes) -> Profile:
        try:
            d = tomllib.loads(data.decode())
            return cls(
                name=name,
                image=str(d.get("image", DEFAULT_IMAGE)),
                color=str(d.get("color", "#2e86de")),
                memory_mib=int(d["memory_mib"]) if "memory_mib" in d else None,
                network=Network(d.get("network", "internet")),
                on_exit=ExitDefault(d.get("on_exit", "ask")),
                clipboard=ClipboardPolicy(d.get("clipboard", "host-to-guest")),
                dns=parse_dns(d.get("dns", "host")),
                search=str(d.get("search", DEFAULT_SEARCH)),
                data_mib=int(_typed(d.get("data_mib", 1024), int)),
                downloads=DownloadsTo(d.get("downloads", "session")),
                created_at=float(d.get("created_at", 0.0)),
            ).validate()
        except (ValueError, TypeError, OverflowError, tomllib.TOMLDecodeError,
                UnicodeDecodeError, UsageError) as exc:
            detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise BlankSlateError(f"context '{name}': profile is corrupt ({detail})") from exc


@dataclass(frozen=True)
class KeptLayer:
    """One of the context's own qcow2 files, with its LUKS key wrapped by the context key."""

    file: str
    key: str


@dataclass(frozen=True)
class KeptState:
    """The encrypted saved state matching the context's top layer.

    With ``ram`` (a delta keep): ``file`` is the device state alone and ``ram`` the pages that
    differ from the golden ``ram.img`` under the context's layers. Without: ``file`` is a
    full migration stream, RAM and devices (cold-booted sessions). ``bound`` states (all made
    now) are tied by their ``label`` to their context, generation, snapshot point and file
    name, so an older state file renamed over a newer one, or another's, does not decrypt;
    states kept before that have no label.
    """

    file: str
    size: int  # bytes of the encrypted file
    ram: str | None = None
    ram_size: int = 0
    bound: bool = False

    def label(self, context: str, generation: int, snapshot: str, file: str) -> bytes:
        """What the encrypted ``file`` (one of this state's) is bound to."""
        if not self.bound:
            return b""
        return f"blankslate-kept\0{context}\0{generation}\0{snapshot}\0{file}".encode()


@dataclass(frozen=True)
class Manifest:
    """``current.json``: the context's snapshot point on top of its image's golden one.

    ``layers`` are the context's own qcow2 files, bottom first. ``state`` is the saved RAM
    state matching the top layer, or None to restore the image's golden state (only valid
    while ``layers`` is empty). ``load`` is the one reader and ``save`` the one writer of the
    file: whatever the file holds, ``load`` gives a valid Manifest or a one-line error.
    """

    image: str
    snapshot: str = ""  # identity of the image snapshot point the layers sit on
    layers: tuple[KeptLayer, ...] = ()
    state: KeptState | None = None
    generation: int = 0
    kept_at: float | None = None

    @classmethod
    def load(cls, path: Path, image: str) -> Manifest:
        if not path.exists():
            return cls(image=image)
        try:
            d = json.loads(path.read_text())
            if not isinstance(d, dict):
                raise TypeError("not an object")
            layers = d.get("layers", [])
            state = d.get("state")
            kept_at = d.get("kept_at")
            manifest = cls(
                image=_typed(d.get("image", image), str),
                snapshot=_typed(d.get("snapshot", ""), str),
                layers=tuple(KeptLayer(_typed(e["file"], str), _typed(e["key"], str))
                             for e in _typed(layers, list)),
                state=None if state is None else KeptState(
                    _typed(state["file"], str), _typed(state["bytes"], int),
                    None if state.get("ram") is None else _typed(state["ram"], str),
                    _typed(state.get("ram_bytes", 0), int),
                    _typed(state.get("bound", False), bool)),
                generation=_typed(d.get("generation", 0), int),
                kept_at=None if kept_at is None else float(_typed(kept_at, (int, float))),
            )
            if not all(_FILE_RE.fullmatch(name) for name in manifest.referenced_files()):
                raise ValueError("a file name that is not a plain name in the context's folder")
            return manifest
        except (OSError, ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
            raise BlankSlateError(f"context manifest {path} is corrupt") from exc

    def save(self, path: Path) -> None:
        atomic_write_json(path, {
            "image": self.image,
            "snapshot": self.snapshot,
            "layers": [{"file": e.file, "key": e.key} for e in self.layers],
            "state": None if self.state is None else {
                "file": self.state.file, "bytes": self.state.size,
                **({"ram": self.state.ram, "ram_bytes": self.state.ram_size}
                   if self.state.ram is not None else {}),
                **({"bound": True} if self.state.bound else {}),
            },
            "generation": self.generation,
            "kept_at": self.kept_at,
        })

    def referenced_files(self) -> set[str]:
        names = {layer.file for layer in self.layers}
        if self.state:
            names.add(self.state.file)
            if self.state.ram is not None:
                names.add(self.state.ram)
        return names


CURRENT, SUSPENDED = "current.json", "suspended.json"
VOLUME, VOLUME_KEY = "persistent.qcow2", "persistent.key"


def files_in_use(context_dir: Path) -> set[str]:
    """The files a context's data dir must keep: its manifest, a suspended session's, and
    everything either references, and its persistent folder's volume and key
    (BlankSlateError if a manifest cannot be read)."""
    names = {CURRENT, SUSPENDED, VOLUME, VOLUME_KEY}
    for name in (CURRENT, SUSPENDED):
        if (context_dir / name).exists():
            names |= Manifest.load(context_dir / name, "").referenced_files()
    return names


_T = TypeVar("_T")
_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _typed(value: object, kind: type[_T] | tuple[type, ...]) -> _T:
    """``value`` if it is of ``kind`` (bool is not an int here), else TypeError."""
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise TypeError(f"expected {kind}, got {type(value).__name__}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class Broken:
    """A context whose profile or manifest cannot be read: listed, checkable, removable."""

    name: str
    reason: str


class Context:
    """A context's profile plus the paths of its data."""

    def __init__(self, paths: Paths, profile: Profile) -> None:
        self.paths = paths
        self.profile = profile

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def data_dir(self) -> Path:
        return self.paths.contexts_data / self.name

    @property
    def manifest_path(self) -> Path:
        return self.data_dir / CURRENT

    def manifest(self) -> Manifest:
        return Manifest.load(self.manifest_path, self.profile.image)

    @property
    def volume_path(self) -> Path:
        """The persistent folder: a LUKS qcow2 attached to every session of the context."""
        return self.data_dir / VOLUME

    @property
    def volume_key_path(self) -> Path:
        return self.data_dir / VOLUME_KEY

    @property
    def suspended_path(self) -> Path:
        return self.data_dir / SUSPENDED

    def suspended(self) -> Manifest | None:
        """The suspended session (its layers and saved state, on top of ``manifest()``'s
        generation), or None. Resuming it starts from here; keeping it makes it current."""
        if not self.suspended_path.exists():
            return None
        return Manifest.load(self.suspended_path, self.profile.image)

    def size_bytes(self) -> int:
        if not self.data_dir.is_dir():
            return 0
        return sum(p.stat().st_blocks * 512 for p in self.data_dir.iterdir() if p.is_file())


class ContextStore:
    """Create, list, load and remove contexts."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths

    def _profile_path(self, name: str) -> Path:
        return self.paths.contexts_config / f"{validate_name(name, 'context name')}.toml"

    def ensure_defaults(self) -> None:
        """First start: create ``personal`` and ``work``."""
        marker = self.paths.config / ".initialized"
        if marker.exists():
            return
        private_dir(self.paths.config)
        # Two commands started at once on a fresh home (the app and the CLI) take turns.
        fd = os.open(self.paths.config / ".initialized.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if marker.exists():
                return
            for name, color in DEFAULT_CONTEXTS.items():
                if not self._profile_path(name).exists():
                    self.create(Profile(name=name, color=color))
            atomic_write_bytes(marker, b"")
        finally:
            os.close(fd)

    def create(self, profile: Profile) -> Context:
        profile.validate()
        if profile.image not in RECIPES and \
                not (self.paths.images / profile.image / "manifest.json").exists():
            raise NotFoundError(f"unknown image '{profile.image}' (known: {', '.join(RECIPES)})")
        path = self._profile_path(profile.name)
        if path.exists():
            raise UsageError(f"context '{profile.name}' already exists")
        private_dir(self.paths.contexts_config)
        private_dir(self.paths.contexts_data / profile.name)
        atomic_write_bytes(path, profile.to_toml())
        return Context(self.paths, profile)

    def save(self, profile: Profile) -> None:
        profile.validate()
        atomic_write_bytes(self._profile_path(profile.name), profile.to_toml())

    def update(self, profile: Profile) -> Profile:
        """Change an existing context's settings (``context set``, the GUI's Settings…).

        Everything but the image and the persistent folder's size may change; a running
        session goes on with the old settings and the next one gets these. The creation
        time is kept. Renaming is ``rename_context`` (its files are bound to its name).
        """
        current = self.get(profile.name).profile
        if profile.image != current.image:
            raise UsageError(f"context '{profile.name}': the image cannot be changed "
                             f"(it is '{current.image}'): create a new context instead")
        if profile.data_mib != current.data_mib:
            raise UsageError(f"context '{profile.name}': the persistent folder's size cannot "
                             "be changed after creation")
        profile.created_at = current.created_at
        self.save(profile)
        return profile

    def get(self, name: str) -> Context:
        path = self._profile_path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"unknown context '{name}'") from None
        except OSError as exc:
            raise BlankSlateError(f"context '{name}': cannot read {path}: {exc.strerror}") \
                from exc
        try:
            return Context(self.paths, Profile.from_toml(name, data))
        except BlankSlateError as exc:
            raise BlankSlateError(f"{exc}: {path}") from exc

    def list(self) -> list[Context]:
        """The contexts whose profile and manifest read well (see ``scan``)."""
        return self.scan()[0]

    def scan(self) -> tuple[builtins.list[Context], builtins.list[Broken]]:
        """Every context: the sound ones, and the broken ones with a one-line reason. One
        broken context never hides the others."""
        d = self.paths.contexts_config
        good: builtins.list[Context] = []
        broken: builtins.list[Broken] = []
        if not d.is_dir():
            return good, broken
        for path in sorted(d.glob("*.toml")):
            try:
                ctx = self.get(path.stem)
                ctx.manifest()
            except (BlankSlateError, OSError) as exc:
                broken.append(Broken(path.stem, str(exc)))
            else:
                good.append(ctx)
        return good, broken

    def remove(self, name: str) -> int:
        """Delete a context — a broken one too. Unlinking its profile is the commit point (a
        kill after it leaves data without a profile, which recovery erases); then its data
        is securely erased. Returns bytes wiped."""
        path = self._profile_path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFoundError(f"unknown context '{name}'") from None
        data = self.paths.contexts_data / name
        report = erase_tree(data) if data.exists() else None
        return report.wiped_bytes if report else 0

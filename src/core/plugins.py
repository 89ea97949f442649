"""The plugin registry: vmforge's replacement for QEMU's ``module_init``.

Three entry-point groups name classes; one names hook modules:

=================  ======================  ==============================
kind               entry-point group       value points at
=================  ======================  ==============================
``block``          ``vmforge.block``       a ``BlockDriver`` subclass
``device``         ``vmforge.device``      a ``Device`` subclass
``machine``        ``vmforge.machine``     a ``Machine`` subclass
``hooks``          ``vmforge.hooks``       a module of ``@hookimpl``s
=================  ======================  ==============================

Names come from installed distributions' metadata, without importing them;
a class is imported the first time it is used, so a broken plugin fails only
then, with an error naming its distribution, version and entry point.  The
metadata of the path's folders is read here (``*.dist-info``/``*.egg-info``:
``entry_points.txt`` and the head of ``METADATA``), as importlib.metadata
finds it, without importing importlib_metadata (a third of a command's start-up
time); other path entries (zip files) go through importlib_metadata.  What the
scan of ``sys.path`` keeps is stored between commands while the path's folders
are unchanged (:mod:`vmforge.plugins_cache`).

A hooks module may declare the commands it extends, in the group
:data:`HOOK_COMMANDS_GROUP` of its distribution: ``COMMAND = module``, the module
as its ``vmforge.hooks`` entry point names it.  It is then imported only when one
of those commands runs (``vmforge_add_options``, ``vmforge_configure``; machine
events come with ``run``), so ``vmforge img`` imports neither it nor pluggy.  A
hooks module that declares none is loaded for every command.

Users control loading as with pytest's ``-p``:

- ``-p no:NAME`` (or ``VMFORGE_PLUGINS="no:NAME,..."``) blocks every entry
  point of the distribution ``NAME``, or every entry point called ``NAME``;
- ``VMFORGE_DISABLE_PLUGIN_AUTOLOAD=1`` loads nothing but what ``-p NAME``
  (or ``VMFORGE_PLUGINS="NAME"``) enables.
"""

from __future__ import annotations

import os
import sys

from vmforge.errors import VmforgeError
from vmforge.lazy import import_module

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any, Protocol

    import pluggy

    from vmforge.block.driver import BlockDriver
    from vmforge.hookcall import HookRelay
    from vmforge.plugins_cache import Scan

    class _HasMetadata(Protocol):
        """What :func:`_name_version` needs of a distribution (importlib_metadata's
        ``Distribution`` and, in its newer releases, ``IDistribution``)."""

        def read_text(self, filename: str) -> str | None: ...

__all__ = [
    "ENV_DISABLE_AUTOLOAD",
    "ENV_PLUGINS",
    "GROUPS",
    "HOOK_COMMANDS_GROUP",
    "KINDS",
    "MAGIC_GROUP",
    "PluginConflict",
    "PluginError",
    "PluginInfo",
    "PluginLoadError",
    "PluginNotFound",
    "Registry",
    "configure",
    "registry",
]

#: class kinds and their entry-point groups
GROUPS: dict[str, str] = {
    "block": "vmforge.block",
    "device": "vmforge.device",
    "machine": "vmforge.machine",
    "hooks": "vmforge.hooks",
}
KINDS: tuple[str, ...] = ("block", "device", "machine")
#: entry points naming a block format's probe function (``probe(header, filename) ->
#: score``) in a light module, under the format's name: probing then imports no driver
PROBE_GROUP = "vmforge.block.probe"
#: entry points ``"FORMAT.OFFSET.HEX" = probe``: the format's probe can only claim an
#: image whose bytes at OFFSET are HEX (one of them when it declares several), so probing
#: imports it only for those (:meth:`Registry.probe_magics`); OFFSET ``end-N`` counts from
#: the end of the file (a trailer, as dmg's ``koly``)
MAGIC_GROUP = "vmforge.block.magic"
#: entry points ``COMMAND = hooks.module``: the ``vmforge`` commands a hooks module of
#: the same distribution extends (it is loaded for those only)
HOOK_COMMANDS_GROUP = "vmforge.hooks.commands"

ENV_DISABLE_AUTOLOAD = "VMFORGE_DISABLE_PLUGIN_AUTOLOAD"
ENV_PLUGINS = "VMFORGE_PLUGINS"

#: the base class a plugin of each kind must subclass: (module, class name)
_BASES: dict[str, tuple[str, str]] = {
    "block": ("vmforge.block.driver", "BlockDriver"),
    "device": ("vmforge.device", "Device"),
    "machine": ("vmforge.machine", "Machine"),
}


def _name_version(dist: _HasMetadata) -> tuple[str, str]:
    """Name and Version from the head of METADATA (no e-mail parser: start-up time)."""
    name = version = "?"
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    for line in text[:text.find("\n\n") + 1 or None].splitlines():   # not the description's
        if not line:
            break                      # the headers end at the first empty line
        if line.startswith("Name:"):
            name = line[5:].strip() or "?"
        elif line.startswith("Version:"):
            version = line[8:].strip() or "?"
    return name, version


class EntryPoint:
    """One line of a distribution's ``entry_points.txt``: ``name = module:attr``."""

    __slots__ = ("group", "name", "value")

    _VALUE = r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?(\[.*\]\s*)?$"
    #: what a plain ``module:attr`` is made of (others go through :attr:`_VALUE`: re
    #: is imported for them only, ~8 ms of start-up with the enum it imports)
    _PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")

    def __init__(self, name: str, value: str, group: str) -> None:
        self.name, self.value, self.group = name, value, group

    def load(self) -> Any:
        """Import the module and return the object the value names."""
        module, colon, attrs = self.value.partition(":")
        if not (module and (attrs or not colon) and self._PLAIN.issuperset(module)
                and self._PLAIN.issuperset(attrs)):
            import re

            match = re.match(self._VALUE, self.value)
            if match is None:
                raise ValueError(f"malformed entry point value {self.value!r}")
            module, attrs = match["module"], match["attr"] or ""
        obj = import_module(module)
        for attr in attrs.split(".") if attrs else ():
            obj = getattr(obj, attr)
        return obj

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"


def parse_entry_points(text: str) -> list[EntryPoint]:
    """The entry points of an ``entry_points.txt`` (an ini file: ``[group]``, then
    ``name = value`` lines)."""
    out: list[EntryPoint] = []
    group = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
        elif group is not None and "=" in line:
            name, _, value = line.partition("=")
            out.append(EntryPoint(name.strip(), value.strip(), group))
    return out


class _FolderDist:
    """A distribution's metadata folder (``*.dist-info`` or ``*.egg-info``)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        stem = os.path.basename(folder).rpartition(".")[0]
        #: the name as the folder spells it (``name-version.dist-info``)
        self._normalized_name = stem.partition("-")[0]

    def read_text(self, filename: str) -> str | None:
        try:
            return self.read_bytes(filename).decode()
        except (OSError, UnicodeDecodeError):
            return None

    def read_bytes(self, filename: str) -> bytes:
        """The file's bytes (no text file object: the scan reads one per distribution)."""
        fd = os.open(f"{self.folder}/{filename}", os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


def _distributions(path: Sequence[str]) -> Iterator[Any]:
    """Every distribution on ``path``, in path order (importlib.metadata's order)."""
    for entry in path:
        folder = entry or "."
        try:
            with os.scandir(folder) as it:    # no stat per entry, as isdir() would make
                found = [e.path for e in it
                         if e.name.lower().endswith((".dist-info", ".egg-info")) and e.is_dir()]
        except NotADirectoryError:  # a zip file: importlib_metadata reads those
            import importlib_metadata

            yield from importlib_metadata.distributions(path=[entry])
            continue
        except OSError:
            continue
        for full in found:
            yield _FolderDist(full)


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    name = name.replace("_", "-").replace(".", "-")      # re.sub(r"[-_.]+", "-", name)
    while "--" in name:
        name = name.replace("--", "-")
    return name.lower()


def _read_scan(path: Sequence[str]) -> Scan:
    """The distributions on ``path`` with an entry point of :data:`GROUPS`, in path order
    (one shadows those of its name after it), with their entry points of vmforge's
    groups (:mod:`vmforge.plugins_cache` keeps them between commands)."""
    kinds = set(GROUPS.values())
    wanted = {*kinds, PROBE_GROUP, MAGIC_GROUP, HOOK_COMMANDS_GROUP}
    seen: set[str] = set()
    out: Scan = []
    for dist in _distributions(path):
        # the name from the dist-info folder when it has one (parsing every
        # distribution's METADATA would cost more than the rest of start-up)
        key = normalize(getattr(dist, "_normalized_name", None) or _name_version(dist)[0])
        if key in seen:  # shadowed by an earlier entry of the path
            continue
        seen.add(key)
        source = None
        if isinstance(dist, _FolderDist):
            source = f"{dist.folder}/entry_points.txt"
            try:
                data = dist.read_bytes("entry_points.txt")
            except OSError:
                continue
            if b"vmforge." not in data:  # no group of ours: not parsed (start-up time)
                continue
            try:
                all_eps: list[Any] = parse_entry_points(data.decode())
            except UnicodeDecodeError:
                continue
        else:
            all_eps = list(dist.entry_points)
        eps = [(ep.group, ep.name, ep.value) for ep in all_eps if ep.group in wanted]
        if any(group in kinds for group, _, _ in eps):
            out.append((*_name_version(dist), source, eps))
    return out


class PluginError(VmforgeError):
    """Base of the registry's errors."""


class PluginInfo:
    """One entry point of a plugin distribution, read from metadata.

    Immutable; equal (and hashed) by every field but ``entry_point``, which its repr
    leaves out too.  A plain class rather than a frozen dataclass: making a dataclass
    costs about a millisecond of every command's start-up.
    """

    __slots__ = ("blocked", "dist", "entry_point", "kind", "name", "value", "version")
    kind: str
    name: str
    value: str
    dist: str
    version: str
    entry_point: Any
    blocked: bool

    def __init__(self, kind: str, name: str, value: str, dist: str, version: str,
                 entry_point: Any, blocked: bool = False) -> None:
        for attr, v in (("kind", kind), ("name", name), ("value", value), ("dist", dist),
                        ("version", version), ("entry_point", entry_point),
                        ("blocked", blocked)):
            object.__setattr__(self, attr, v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def _key(self) -> tuple[str, str, str, str, str, bool]:
        return self.kind, self.name, self.value, self.dist, self.version, self.blocked

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, PluginInfo)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"PluginInfo(kind={self.kind!r}, name={self.name!r}, value={self.value!r}, "
                f"dist={self.dist!r}, version={self.version!r}, blocked={self.blocked!r})")

    def describe(self) -> str:
        return (f"{self.kind} plugin {self.name!r} = {self.value!r} "
                f"from {self.dist} {self.version}")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "value": self.value,
                "distribution": self.dist, "version": self.version,
                "blocked": self.blocked}


class PluginNotFound(PluginError, LookupError):
    """No installed (and unblocked) plugin of that kind has that name."""

    def __init__(self, kind: str, name: str, available: Sequence[str],
                 blocked: Sequence[PluginInfo] = ()) -> None:
        self.kind, self.name, self.available = kind, name, list(available)
        msg = f"no {kind} plugin named {name!r} is installed"
        if blocked:
            msg += " (" + "; ".join(f"{b.dist} {b.version} has one, but it is blocked"
                                    for b in blocked) + ")"
        msg += "; installed: " + (", ".join(sorted(available)) or "none")
        super().__init__(msg)


class PluginLoadError(PluginError):
    """A plugin failed to import, or is not what its kind requires."""

    def __init__(self, info: PluginInfo, reason: str, exc: BaseException | None = None) -> None:
        self.info, self.reason, self.exc = info, reason, exc
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        super().__init__(f"{info.describe()} failed to load: {reason}{detail}")


class PluginConflict(PluginError):
    """Two distributions claim the same name for the same kind."""

    def __init__(self, kind: str, name: str, infos: Sequence[PluginInfo]) -> None:
        self.kind, self.name, self.infos = kind, name, list(infos)
        who = ", ".join(f"{i.dist} {i.version} ({i.value})" for i in infos)
        super().__init__(f"{kind} plugin name {name!r} is claimed by several distributions: "
                         f"{who}; block all but one with -p no:DIST")


class LoadPolicy:
    """Which plugins may load: from ``-p`` options and the environment."""

    def __init__(self, autoload: bool = True, blocked: set[str] | None = None,
                 enabled: set[str] | None = None) -> None:
        self.autoload = autoload
        self.blocked: set[str] = set() if blocked is None else blocked
        self.enabled: set[str] = set() if enabled is None else enabled

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LoadPolicy):
            return NotImplemented
        return (self.autoload, self.blocked, self.enabled) == (other.autoload, other.blocked,
                                                               other.enabled)

    __hash__ = None  # type: ignore[assignment]   # mutable, as the dataclass it was

    def __repr__(self) -> str:
        return (f"LoadPolicy(autoload={self.autoload!r}, blocked={self.blocked!r}, "
                f"enabled={self.enabled!r})")

    @classmethod
    def from_options(cls, options: Iterable[str] = (),
                     environ: dict[str, str] | None = None) -> LoadPolicy:
        env = os.environ if environ is None else environ
        policy = cls(autoload=env.get(ENV_DISABLE_AUTOLOAD, "").strip() in ("", "0"))
        items = [s for s in env.get(ENV_PLUGINS, "").split(",") if s.strip()]
        for item in [*items, *options]:
            item = item.strip()
            if item.startswith("no:"):
                policy.blocked.add(normalize(item[3:]))
            elif item:
                policy.enabled.add(normalize(item))
        return policy

    def allows(self, dist: str, name: str) -> bool:
        keys = {normalize(dist), normalize(name)}
        if keys & self.blocked:
            return False
        return self.autoload or bool(keys & self.enabled)


class Registry:
    """The installed plugins of every kind, read lazily from metadata.

    ``path`` limits the search to those directories (default: ``sys.path``).
    ``command`` is the ``vmforge`` command that runs (None: any, as for a script or
    ``vmforge plugins``): hooks plugins that declare other commands are not loaded.
    ``cache``: keep the scan of the path between processes (default: for ``sys.path``);
    ``refresh``: scan even when the kept scan looks current (``vmforge plugins``).
    """

    def __init__(self, policy: LoadPolicy | None = None, path: Sequence[str] | None = None,
                 command: str | None = None, cache: bool | None = None,
                 refresh: bool = False) -> None:
        self.policy = policy or LoadPolicy()
        self.path = list(path) if path is not None else None
        self.command = command
        #: the scan kept between processes (:mod:`vmforge.plugins_cache`); by default
        #: for ``sys.path``'s
        self.cache = self.path is None if cache is None else cache
        #: scan even when the kept scan looks current (and keep the new one)
        self.refresh = refresh
        self._entries: list[PluginInfo] | None = None
        #: (normalized distribution, format name) -> its probe entry point
        self._probes: dict[tuple[str, str], EntryPoint] = {}
        #: (normalized distribution, format name) -> its magics, None: one is malformed
        self._magics: dict[tuple[str, str], list[tuple[int, bytes]] | None] = {}
        #: (normalized distribution, hooks module) -> the commands it declares
        self._hook_commands: dict[tuple[str, str], list[str]] = {}
        self._classes: dict[tuple[str, str], type] = {}
        self._pm: pluggy.PluginManager | None = None
        #: the plain hooks' relay (:mod:`vmforge.hookcall`), while pluggy is not needed
        self._relay: HookRelay | None = None

    # -- what is installed (metadata only) ------------------------------------------

    def entries(self, kind: str | None = None, include_blocked: bool = False) -> list[PluginInfo]:
        """Every plugin entry point, sorted by kind and name."""
        if self._entries is None:
            self._entries = self._scan()
        return [e for e in self._entries
                if (kind is None or e.kind == kind) and (include_blocked or not e.blocked)]

    def _scan(self) -> list[PluginInfo]:
        path = sys.path if self.path is None else self.path
        if self.cache:
            from vmforge import plugins_cache

            scan = None if self.refresh else plugins_cache.load(path)
            if scan is None:
                times = plugins_cache.folder_times(path)
                scan = _read_scan(path)
                plugins_cache.store(path, scan, times)
        else:
            scan = _read_scan(path)
        groups = {g: (i, k) for i, (k, g) in enumerate(GROUPS.items())}
        policy = self.policy
        allow_all = policy.autoload and not policy.blocked     # (the usual case)
        found: list[tuple[int, str, str, PluginInfo]] = []
        for dist_name, version, _, eps in scan:
            dist_key = normalize(dist_name)
            for group, name, value in eps:
                ep = EntryPoint(name, value, group)
                if group == PROBE_GROUP:
                    self._probes[(dist_key, name)] = ep
                elif group == MAGIC_GROUP:
                    self._add_magic(dist_key, name)
                elif group == HOOK_COMMANDS_GROUP:
                    self._hook_commands.setdefault((dist_key, value.strip()), []).append(name)
                else:
                    order, kind = groups[group]
                    blocked = not (allow_all or policy.allows(dist_name, name))
                    found.append((order, name, dist_key, PluginInfo(
                        kind, name, value, dist_name, version, ep, blocked)))
        found.sort(key=lambda f: f[:3])
        return [f[3] for f in found]

    def names(self, kind: str) -> list[str]:
        """Names of the usable plugins of ``kind``."""
        return sorted({e.name for e in self.entries(kind)})

    def conflicts(self) -> dict[tuple[str, str], list[PluginInfo]]:
        """Names claimed by more than one distribution."""
        by: dict[tuple[str, str], list[PluginInfo]] = {}
        for e in self.entries():
            if e.kind != "hooks":
                by.setdefault((e.kind, e.name), []).append(e)
        return {k: v for k, v in by.items() if len(v) > 1}

    def info(self, kind: str, name: str) -> PluginInfo:
        """The entry point for ``name``, or PluginNotFound / PluginConflict."""
        if kind not in GROUPS:
            raise PluginError(f"unknown plugin kind {kind!r} (kinds: {', '.join(GROUPS)})")
        found = [e for e in self.entries(kind) if e.name == name]
        if not found:
            blocked = [e for e in self.entries(kind, include_blocked=True)
                       if e.name == name and e.blocked]
            raise PluginNotFound(kind, name, self.names(kind), blocked)
        if len(found) > 1:
            raise PluginConflict(kind, name, found)
        return found[0]

    # -- importing --------------------------------------------------------------------

    def load(self, kind: str, name: str) -> type:
        """The class registered as ``name`` for ``kind``, imported on first use."""
        key = (kind, name)
        cls = self._classes.get(key)
        if cls is None:
            info = self.info(kind, name)
            cls = self._import(info)
            self._check_class(info, cls)
            self._classes[key] = cls
        return cls

    @staticmethod
    def _import(info: PluginInfo) -> Any:
        try:
            return info.entry_point.load()
        except Exception as exc:  # any failure of third-party code is the plugin's
            raise PluginLoadError(info, "import failed", exc) from exc

    @staticmethod
    def _check_class(info: PluginInfo, cls: Any) -> None:
        module, base_name = _BASES[info.kind]
        base = getattr(__import__(module, fromlist=[base_name]), base_name)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginLoadError(info, f"{cls!r} is not a subclass of {module}.{base_name}")
        if info.kind == "block":
            from vmforge.block.driver import BLOCK_API_VERSION

            version = getattr(cls, "api_version", None)
            if version != BLOCK_API_VERSION:
                raise PluginLoadError(info, f"it implements block driver API {version}, this "
                                      f"vmforge has API {BLOCK_API_VERSION}")

    def probe_entry_point(self, name: str) -> EntryPoint | None:
        """The :data:`PROBE_GROUP` entry point of the block format ``name`` (from the
        distribution that provides the format), or None."""
        info = self.info("block", name)
        return self._probes.get((normalize(info.dist), name))

    def _add_magic(self, dist: str, spec: str) -> None:
        fmt, _, hex_bytes = spec.rpartition(".")
        fmt, _, offset = fmt.rpartition(".")
        key = (dist, fmt)
        try:
            at = -int(offset[4:]) if offset.startswith("end-") else int(offset)
            magic: tuple[int, bytes] | None = (at, bytes.fromhex(hex_bytes))
        except ValueError:
            magic = None
        magics = self._magics.setdefault(key, [])
        if offset.startswith("end-"):   # within the last N bytes (not end-0, end--N)
            valid = magic is not None and 0 < len(magic[1]) <= -magic[0]
        else:
            valid = magic is not None and len(magic[1]) > 0 and magic[0] >= 0
        if magic is None or not valid or magics is None:
            self._magics[key] = None        # asked for every image, as without a magic
        else:
            magics.append(magic)

    def probe_magics(self, name: str) -> list[tuple[int, bytes]] | None:
        """The (offset, bytes) one of which an image must hold for the block format
        ``name``'s probe to claim it (:data:`MAGIC_GROUP`; a negative offset counts from
        the end of the file), or None: it may claim any."""
        info = self.info("block", name)
        self.entries()
        return self._magics.get((normalize(info.dist), name))

    def probe_function(self, name: str) -> Any:
        """The probe of the block format ``name``: the function its distribution names
        in :data:`PROBE_GROUP` (a light module: no driver imported), else the driver
        class's ``probe``.  Raises as :meth:`load` does."""
        info = self.info("block", name)
        ep = self.probe_entry_point(name)
        if ep is None:
            cls: type[BlockDriver] = self.load("block", name)
            return cls.probe
        try:
            fn = ep.load()
        except Exception as exc:
            raise PluginLoadError(info, f"its probe {ep.value!r} failed to import", exc) from exc
        if not callable(fn):
            raise PluginLoadError(info, f"its probe {ep.value!r} is not a function")
        return fn

    def load_all(self, kind: str) -> dict[str, type | PluginError]:
        """Import every plugin of ``kind``: the class, or the error it raised."""
        out: dict[str, type | PluginError] = {}
        for name in self.names(kind):
            try:
                out[name] = self.load(kind, name)
            except PluginError as exc:
                out[name] = exc
        return out

    # -- hooks (pluggy) -----------------------------------------------------------------

    def hook_commands(self, info: PluginInfo) -> list[str] | None:
        """The commands the hooks plugin ``info`` declares (:data:`HOOK_COMMANDS_GROUP`),
        or None when it declares none (it is loaded for every command)."""
        self.entries()
        return self._hook_commands.get((normalize(info.dist), info.value.strip()))

    def hook_entries(self) -> list[PluginInfo]:
        """The hooks plugins to load for :attr:`command`: those that declare it or
        declare no command (every one when :attr:`command` is None)."""
        out = []
        for info in self.entries("hooks"):
            commands = self.hook_commands(info)
            if self.command is None or commands is None or self.command in commands:
                out.append(info)
        return out

    @property
    def hook(self) -> Any:
        """``registry.hook.vmforge_xxx(...)``: call every hooks plugin.

        Without pluggy while it is not needed (start-up time): with no hooks plugin
        to load, calls go to a relay that answers as pluggy would with no
        implementation (``[]``); plain plugins are called by :mod:`vmforge.hookcall`
        (pluggy's manager is made for the others, and for a call it does not make)."""
        if self._pm is not None:
            return self._pm.hook
        if self._relay is not None:
            return self._relay
        entries = self.hook_entries()
        if not entries:
            return _NO_HOOKS
        from vmforge import hookcall, hookspecs

        plugins = [(f"{info.dist}:{info.name}", self._import(info)) for info in entries]
        self._relay = hookcall.plain_hooks(plugins, hookspecs, hookspecs.PROJECT,
                                           lambda: self._pm, lambda: self.plugin_manager)
        return self._relay if self._relay is not None else self.plugin_manager.hook

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The pluggy manager, with the ``vmforge.hooks`` plugins of :meth:`hook_entries`
        registered (and the historic calls made before without it)."""
        if self._pm is None:
            import pluggy

            from vmforge import hookspecs

            pm = pluggy.PluginManager(hookspecs.PROJECT)
            pm.add_hookspecs(hookspecs)
            modules = []
            for info in self.hook_entries():
                module = self._import(info)
                try:
                    pm.register(module, name=f"{info.dist}:{info.name}")
                    pm.check_pending()
                except pluggy.PluginValidationError as exc:
                    raise PluginLoadError(info, "its hooks do not match vmforge's specs",
                                          exc) from exc
                modules.append(module)
            if self._relay is not None:
                self._relay.replay_history(pm, modules)
            self._pm = pm
        return self._pm

    def hook_implementers(self) -> dict[str, list[str]]:
        """Hook name -> plugins implementing it (``vmforge plugins --hooks``)."""
        pm = self.plugin_manager
        return {name: [impl.plugin_name for impl in getattr(pm.hook, name).get_hookimpls()]
                for name in sorted(dir(pm.hook)) if name.startswith("vmforge_")}


class _NoHookCaller:
    """A hook with no implementation: a call returns ``[]``, a historic call nothing."""

    def __call__(self, **kwargs: Any) -> list[Any]:
        return []

    def call_historic(self, result_callback: Any = None, kwargs: Any = None) -> None:
        return None

    def get_hookimpls(self) -> list[Any]:
        """No implementation (pluggy's HookCaller answers the same)."""
        return []


class _NoHookRelay:
    """``registry().hook`` while no hooks plugin is installed."""

    def __getattr__(self, name: str) -> _NoHookCaller:
        if not name.startswith("vmforge_"):
            raise AttributeError(name)
        return _NoHookCaller()


_NO_HOOKS = _NoHookRelay()

_registry: Registry | None = None


def configure(options: Iterable[str] = (), path: Sequence[str] | None = None,
              command: str | None = None, refresh: bool = False) -> Registry:
    """Make the process-wide registry with ``-p`` options (and the environment), for
    the ``vmforge`` command ``command`` (None: any); ``refresh``: not from the kept scan
    (:class:`Registry`)."""
    global _registry
    _registry = Registry(LoadPolicy.from_options(options), path, command, refresh=refresh)
    return _registry


def registry() -> Registry:
    """The process-wide registry (configured from the environment if not yet)."""
    return _registry if _registry is not None else configure()



"""A light block-node graph: the names QMP's ``blockdev-*`` commands use.

QEMU names every node of its graph; a disk's images get automatic names
(``#blockNNN``) and ``blockdev-add`` makes named ones.  vmforge's disks are
:class:`~vmforge.block.backend.BlockBackend` chains, so a node here is a name
bound to an image file (a format node, and the ``file`` protocol node below
it), not an open image: the image is opened when a job or a snapshot puts it
into a chain.

- :func:`layer_name` gives a chain's layer its node name: the name of the added
  node of the same file, else an automatic one, stable for that file (a layer
  reopened read-only keeps it).
- :class:`NodeGraph` holds the added nodes of one machine (:func:`graph_of`).
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

__all__ = ["Node", "NodeGraph", "auto_name", "graph_of", "layer_name", "valid_node_name"]

_LOCK = threading.Lock()
_COUNTER = itertools.count(1)
#: the node name of each image file in a chain (by real path)
_NAMES: dict[str, str] = {}
_GRAPHS: weakref.WeakKeyDictionary[Any, NodeGraph] = weakref.WeakKeyDictionary()


def _key(path: str) -> str:
    return os.path.realpath(path) if os.path.exists(path) else path


def auto_name() -> str:
    """A name as QEMU generates one (``#block``, a counter, two more digits)."""
    n = next(_COUNTER)
    return f"#block{n}{(n * 37) % 100:02d}"


def _name(key: str) -> str:
    with _LOCK:
        name = _NAMES.get(key)
        if name is None:
            name = _NAMES[key] = auto_name()
        return name


def layer_name(layer: Any) -> str:
    """The node name of a chain's layer (an object with ``filename``)."""
    return _name(_key(layer.filename))


def file_layer_name(layer: Any) -> str:
    """The node name of the ``file`` protocol node below a chain's layer."""
    return _name("file:" + _key(layer.filename))


def valid_node_name(name: str) -> bool:
    """QEMU's ``id_wellformed``: a letter, then letters, digits, ``-``, ``.``, ``_``."""
    return bool(name) and name[0].isascii() and name[0].isalpha() and all(
        c.isascii() and (c.isalnum() or c in "-._") for c in name)


@dataclass
class Node:
    """An added node: ``driver`` "file" (``file`` None) or a format over ``file``."""

    name: str
    driver: str
    filename: str
    size: int = 0
    read_only: bool = False
    file: str | None = None          # the protocol node below a format node
    backing: str | None = None       # a backing node's name, or the file it records
    owned: bool = True               # added by name (not an inline child)


class NodeGraph:
    """The nodes ``blockdev-add`` made on one machine, by name, in order."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}

    def add(self, node: Node) -> None:
        self.nodes[node.name] = node
        if node.driver != "file":
            with _LOCK:
                _NAMES[_key(node.filename)] = node.name
        else:
            with _LOCK:
                _NAMES["file:" + _key(node.filename)] = node.name

    def remove(self, name: str) -> None:
        node = self.nodes.pop(name)
        key = _key(node.filename) if node.driver != "file" else "file:" + _key(node.filename)
        with _LOCK:
            if _NAMES.get(key) == name:
                del _NAMES[key]
        if node.file is not None and not self.nodes[node.file].owned:
            self.remove(node.file)

    def users(self, name: str) -> list[Node]:
        """The nodes that have ``name`` as their file or backing child."""
        return [n for n in self.nodes.values() if name in (n.file, n.backing)]


def graph_of(machine: Any) -> NodeGraph:
    with _LOCK:
        graph = _GRAPHS.get(machine)
        if graph is None:
            graph = _GRAPHS[machine] = NodeGraph()
        return graph


# -- -blockdev on the command line -------------------------------------------------------

#: the read-only option of each -blockdev ``file`` node under a format node (by path)
_FILE_RO: dict[str, bool] = {}
#: the drives -blockdev made (QEMU's query-block names no device for them), by id()
_BLOCKDEV_DRIVES: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def _blockdev_options(text: str) -> dict[str, Any]:
    """``-blockdev`` as JSON or as ``key=value`` pairs with dotted keys (``file.filename``)."""
    import json

    from vmforge.config import parse_opts

    if text.lstrip().startswith("{"):
        try:
            opts = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"-blockdev: {exc}") from None
        if not isinstance(opts, dict):
            raise ValueError("-blockdev: a JSON object is expected")
        return opts
    out: dict[str, Any] = {}
    for key, value in parse_opts(text).items():
        where = out
        *parents, last = key.split(".")
        for part in parents:
            where = where.setdefault(part, {})
            if not isinstance(where, dict):
                raise ValueError(f"-blockdev: '{key}' under a value")
        where[last] = value
    return out


def _flag(value: Any) -> bool:
    return value in (True, "on", "true", "yes")


def blockdev_drives(texts: list[str]) -> list[Any]:
    """The drives the ``-blockdev`` options make: a format node over a ``file`` node
    (inline, or another ``-blockdev`` by name) is a disk whose ``drive=`` is the format
    node's name; a ``file`` node no format node uses is a raw disk.  Their node names
    become those of the disk's layers."""
    from vmforge.config import DriveSpec

    files: dict[str, dict[str, Any]] = {}
    formats: dict[str, dict[str, Any]] = {}
    for text in texts:
        opts = _blockdev_options(text)
        name = opts.get("node-name")
        if not isinstance(name, str) or not valid_node_name(name):
            raise ValueError(f"-blockdev {text!r}: a valid node-name is required")
        if name in files or name in formats:
            raise ValueError(f"-blockdev: Duplicate nodes with node-name='{name}'")
        if opts.get("driver") == "file":
            if not isinstance(opts.get("filename"), str):
                raise ValueError(f"-blockdev {text!r}: filename= is required")
            files[name] = opts
        elif isinstance(opts.get("driver"), str):
            formats[name] = opts
        else:
            raise ValueError(f"-blockdev {text!r}: driver= is required")
    used: set[str] = set()
    layers: list[tuple[str, str, dict[str, Any]]] = []        # (name, path, options)
    for name, opts in formats.items():
        child = opts.get("file")
        if isinstance(child, str):
            if child not in files:
                raise ValueError(f"-blockdev: Cannot find device='{child}' nor "
                                 f"node-name='{child}'")
            used.add(child)
            file_name, child = child, files[child]
        elif isinstance(child, dict) and child.get("driver") == "file" and \
                isinstance(child.get("filename"), str):
            file_name = child.get("node-name") or auto_name()
        else:
            raise ValueError(f"-blockdev node {name!r}: file= must name a 'file' node or "
                             "be one (file.driver=file,file.filename=...)")
        path = str(child["filename"])
        with _LOCK:
            _NAMES[_key(path)] = name
            _NAMES["file:" + _key(path)] = str(file_name)
            # (an inline child inherits the format node's read-only, a named one has its own)
            _FILE_RO[_key(path)] = _flag(child.get("read-only", opts.get("read-only"))
                                         if isinstance(opts.get("file"), dict)
                                         else child.get("read-only"))
        layers.append((name, path, opts))
    backings = {str(o["backing"]) for _n, _p, o in layers if isinstance(o.get("backing"), str)}
    drives = []
    for name, path, opts in layers:
        _check_backing(name, path, opts, {n: p for n, p, _o in layers})
        if name in backings:        # (opened as the backing file its overlay records)
            continue
        drives.append(DriveSpec(path, str(opts["driver"]), "none",
                                _flag(opts.get("read-only")), name))
    for name, opts in files.items():
        if name not in used:
            path = str(opts["filename"])
            with _LOCK:
                _NAMES[_key(path)] = name
            drives.append(DriveSpec(path, "raw", "none", _flag(opts.get("read-only")), name))
    for drive in drives:
        _BLOCKDEV_DRIVES[id(drive)] = drive
    return drives


def _check_backing(name: str, path: str, opts: dict[str, Any], paths: dict[str, str]) -> None:
    """``backing``: absent (the chain the image records), null (the image must record
    none) or a node of the file it records; vmforge opens what the images record."""
    from vmforge.block.backend import close_layers, open_driver, resolve_backing

    if "backing" not in opts:
        return
    backing = opts["backing"]
    try:
        layer = open_driver(path, str(opts["driver"]), readonly=True, force_share=True)
    except Exception as exc:
        raise ValueError(f"-blockdev node {name!r}: {exc}") from None
    try:
        recorded = layer.driver.backing_filename
    finally:
        close_layers([layer])
    want = resolve_backing(path, recorded) if recorded else None
    if backing is None and want is None:
        return
    if isinstance(backing, str) and backing in paths and want is not None and \
            _key(paths[backing]) == _key(want):
        return
    raise ValueError(f"-blockdev node {name!r}: a backing other than the file the image "
                     "records is not supported by vmforge")


def from_blockdev(drive: Any) -> bool:
    """Whether ``drive`` (a DriveSpec) came from ``-blockdev``."""
    return _BLOCKDEV_DRIVES.get(id(drive)) is drive


def file_read_only(layer: Any) -> bool | None:
    """The read-only option of the ``-blockdev`` file node under a layer, if it is one."""
    with _LOCK:
        return _FILE_RO.get(_key(layer.filename))

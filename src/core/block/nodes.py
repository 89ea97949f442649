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


def layer_name(layer: Any) -> str:
    """The node name of a chain's layer (an object with ``filename``)."""
    key = _key(layer.filename)
    with _LOCK:
        name = _NAMES.get(key)
        if name is None:
            name = _NAMES[key] = auto_name()
        return name


def file_layer_name(layer: Any) -> str:
    """The node name of the ``file`` protocol node below a chain's layer."""
    key = "file:" + _key(layer.filename)
    with _LOCK:
        name = _NAMES.get(key)
        if name is None:
            name = _NAMES[key] = auto_name()
        return name


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

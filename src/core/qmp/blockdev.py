"""QMP ``blockdev-*`` commands as QEMU 7.2 answers them, over a light node graph
(:mod:`vmforge.block.nodes`): what modern libvirt sends.

- ``blockdev-add`` (driver ``file``, or a format over a ``file`` given as a node
  name or inline, ``backing`` a node name or null), ``blockdev-del``,
  ``query-named-block-nodes``;
- ``blockdev-mirror`` / ``blockdev-backup`` onto an added node (the jobs of
  :mod:`vmforge.qmp.block_jobs` with the node's image as an existing target),
  ``blockdev-snapshot`` (an added overlay without backing becomes the disk's
  active layer).

A disk's layers are named as QEMU names them (``#blockNNN``, or the added node's
name once a pivot or a snapshot put it there); commands take a disk by its
device name or its top layer's node name.
"""

from __future__ import annotations

import os
import re
from typing import Any

from vmforge.block.nodes import (
    Node,
    NodeGraph,
    auto_name,
    file_layer_name,
    file_read_only,
    graph_of,
    layer_name,
    valid_node_name,
)
from vmforge.errors import VmforgeError
from vmforge.qmp.block_jobs import (
    _JOB_OPTS,
    _check_not_busy,
    _drive_backup,
    _drive_mirror,
    machine_jobs,
)
from vmforge.qmp.commands import (
    Command,
    QmpError,
    QmpSession,
    _actual_size,
    _cache,
    _disks,
    _image_info,
)

__all__ = ["BLOCKDEV_COMMANDS"]

#: the options every node takes (BlockdevOptionsBase), beside the driver's own
_BASE_OPTS = ("driver", "node-name", "discard", "cache", "read-only", "auto-read-only",
              "force-share", "detect-zeroes")


def _not_found(name: str) -> QmpError:
    return QmpError(f"Cannot find device='{name}' nor node-name='{name}'")


def find_disk(s: QmpSession, name: str) -> tuple[str, Any]:
    """A disk by its device name or its active layer's node name (``bdrv_lookup_bs``)."""
    for device, _qdev, dev in _disks(s.machine):
        if device == name or layer_name(dev.backend.layers[0]) == name:
            return device, dev
    raise _not_found(name)


def chain_depth(s: QmpSession, backend: Any, name: str) -> int | None:
    """The depth of the node ``name`` in ``backend``'s chain (None: a node elsewhere;
    QEMU's lookup error if there is no such node)."""
    depths = [d for d, la in enumerate(backend.layers) if layer_name(la) == name]
    if depths:
        return depths[0]
    if name not in graph_of(s.machine).nodes and not any(
            layer_name(la) == name for _d, _q, dev in _disks(s.machine)
            for la in dev.backend.layers):
        raise QmpError(f"Cannot find device='' nor node-name='{name}'")
    return None


def _added(graph: NodeGraph, name: str) -> Node:
    node = graph.nodes.get(name)
    if node is None:
        raise _not_found(name)
    return node


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


def _chain_use(s: QmpSession, node: Node) -> int | None:
    """The depth of ``node``'s image in a disk's chain, if one uses it."""
    for _device, _qdev, dev in _disks(s.machine):
        for depth, layer in enumerate(dev.backend.layers):
            if _same_file(layer.filename, node.filename):
                return depth
    return None


def _job_use(s: QmpSession, node: Node) -> bool:

    for job in machine_jobs(s.machine).jobs():
        target = getattr(job, "target_bb", None) or getattr(job, "target", None)
        if job.status not in ("concluded", "null") and \
                _same_file(str(getattr(target, "filename", "")), node.filename):
            return True
    return False


# -- blockdev-add ------------------------------------------------------------------------

def _check_keys(a: dict[str, Any], own: tuple[str, ...]) -> None:
    for key in a:
        if key not in _BASE_OPTS and key not in own:
            raise QmpError(f"Parameter '{key}' is unexpected")


def _open_check(path: str, driver: str, read_only: bool = True) -> tuple[int, str | None]:
    """Open the image as QEMU would (its errors), closed again; its size and the
    backing file it records (as a path to open)."""
    from vmforge.block.backend import close_layers, open_driver, resolve_backing
    from vmforge.block.driver import BlockError
    from vmforge.block.locking import LockedError
    from vmforge.block.probe import probe_format

    if not os.path.exists(path):
        raise QmpError(f"Could not open '{path}': No such file or directory")
    if driver == "file":
        return os.path.getsize(path), None
    if driver != "raw" and probe_format(path) != driver:
        raise QmpError(f"Image is not in {driver} format")
    try:        # (with the locks a node of this kind takes: a disk's image is refused)
        layer = open_driver(path, driver, readonly=read_only)
    except LockedError as exc:
        m = re.search(r'failed to get (shared )?"([^"]+)" lock', str(exc))
        raise QmpError(f'Failed to get {m[1] or ""}"{m[2]}" lock' if m else str(exc)) from None
    except (BlockError, VmforgeError, OSError) as exc:
        raise QmpError(f"Could not open '{path}': {exc}") from None
    try:
        backing = layer.driver.backing_filename
        return int(layer.driver.size), resolve_backing(path, backing) if backing else None
    finally:
        close_layers([layer])


def _add(s: QmpSession, graph: NodeGraph, a: dict[str, Any], root: bool) -> Node:
    from vmforge.block.probe import driver_class, format_names

    driver = a.get("driver")
    if driver is None:
        raise QmpError("Parameter 'driver' is missing")
    if not isinstance(driver, str) or (driver != "file" and driver not in format_names()):
        raise QmpError(f"Parameter 'driver' does not accept value '{driver}'")
    fmt_backing = driver != "file" and driver_class(driver).supports_backing
    _check_keys(a, ("filename",) if driver == "file" else
                ("file", "backing") if fmt_backing else ("file",))
    if driver == "file" and "filename" not in a:
        raise QmpError("Parameter 'filename' is missing")
    if driver != "file" and "file" not in a:
        raise QmpError("Parameter 'file' is missing")
    name = a.get("node-name")
    if name is None:
        if root:
            raise QmpError("'node-name' must be specified for the root node")
        name = auto_name()
    elif not valid_node_name(name):
        raise QmpError(f"Invalid node-name: '{name}'")
    else:
        if name in graph.nodes or any(layer_name(la) == name for _d, _q, dev in
                                      _disks(s.machine) for la in dev.backend.layers):
            raise QmpError(f"Duplicate nodes with node-name='{name}'")
        if any(device == name for device, _q, _dev in _disks(s.machine)):
            raise QmpError(f"node-name={name} is conflicting with a device id")
    read_only = bool(a.get("read-only", False))
    if driver == "file":
        path = str(a["filename"])
        size, _none = _open_check(path, driver)
        node = Node(name, "file", path, size, read_only, owned=root)
        graph.add(node)
        return node
    child_spec = a["file"]
    if isinstance(child_spec, str):
        child = _added(graph, child_spec)
    elif isinstance(child_spec, dict):
        if child_spec.get("driver") != "file":
            raise QmpError("Parameter 'file' other than a node name or a 'file' node is "
                           "not supported by vmforge")
        child = None
    else:
        raise QmpError("Invalid parameter type for 'file', expected: BlockdevRef")
    backing = a.get("backing", "") if fmt_backing else None
    path = child.filename if child is not None else str(child_spec.get("filename"))
    if backing:
        try:
            backing_node = _added(graph, str(backing))
        except QmpError as exc:
            raise QmpError(f"Could not open backing file: {exc.desc}") from None
    if not read_only and any(_same_file(la.filename, path) for _d, _q, dev in
                             _disks(s.machine) for la in dev.backend.layers):
        # (QEMU's backing files unshare writes; vmforge's locks on them do not)
        raise QmpError('Failed to get "write" lock')
    size, recorded = _open_check(path, driver, read_only)
    if backing and (recorded is None or not _same_file(recorded, backing_node.filename)):
        # (a chain is what the images record: a job opens the target with its backing)
        raise QmpError("Parameter 'backing' other than the backing file the image "
                       "records is not supported by vmforge")
    if backing == "" and recorded is not None:
        backing = recorded      # (QEMU opens it: the node has a backing image)
    if child is None:
        child = _add(s, graph, {**child_spec, "read-only": read_only}, root=False)
    node = Node(name, driver, child.filename, size, read_only, file=child.name,
                backing=str(backing) if backing else None, owned=root)
    graph.add(node)
    return node


def _blockdev_add(s: QmpSession, a: dict[str, Any]) -> Any:
    _add(s, graph_of(s.machine), a, root=True)
    return {}


def _blockdev_del(s: QmpSession, a: dict[str, Any]) -> Any:
    """QEMU's checks in order: a disk's node, a node below another (op blocker), not
    added by the monitor, still referenced."""
    graph = graph_of(s.machine)
    name = a["node-name"]
    for _device, _qdev, dev in _disks(s.machine):
        layers = list(dev.backend.layers)
        for depth, layer in enumerate(layers):
            if layer_name(layer) == name:
                if depth == 0:
                    raise QmpError(f"Node {name} is in use")
                raise QmpError(f"Node '{name}' is busy: node is used as backing hd of "
                               f"'{layer_name(layers[depth - 1])}'")
            if file_layer_name(layer) == name:
                raise QmpError(f"Node {name} is not owned by the monitor"
                               if name.startswith("#") else f"Block device {name} is in use")
    node = graph.nodes.get(name)
    if node is None:
        raise QmpError(f"Failed to find node with node-name='{name}'")
    over = [n.name for n in graph.users(name) if n.backing == name]
    if over:
        raise QmpError(f"Node '{name}' is busy: node is used as backing hd of '{over[0]}'")
    if not node.owned:
        raise QmpError(f"Node {name} is not owned by the monitor")
    if graph.users(name) or _job_use(s, node):
        raise QmpError(f"Block device {name} is in use")
    graph.remove(name)
    return {}


# -- query-named-block-nodes -------------------------------------------------------------

def _entry(name: str, drv: str, ro: bool, image: dict[str, Any], filename: str,
           depth: int) -> dict[str, Any]:
    return {"iops_rd": 0, "detect_zeroes": "off", "image": image, "iops_wr": 0, "ro": ro,
            "node-name": name, "backing_file_depth": depth, "drv": drv, "iops": 0,
            "bps_wr": 0, "write_threshold": 0, "encrypted": False, "bps": 0, "bps_rd": 0,
            "cache": _cache("writeback"), "file": filename}


def _file_entry(name: str, path: str, ro: bool) -> dict[str, Any]:
    size = os.path.getsize(path) if os.path.exists(path) else 0
    image = {"virtual-size": size, "filename": path, "format": "file",
             "actual-size": _actual_size(path), "dirty-flag": False}
    return _entry(name, "file", ro, image, path, 0)


def _query_named_block_nodes(s: QmpSession, a: dict[str, Any]) -> Any:
    from vmforge.block.backend import close_layers, open_driver

    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _device, _qdev, dev in _disks(s.machine):
        layers = list(dev.backend.layers)
        ro = bool(dev.readonly or dev.backend.readonly)
        for depth, layer in enumerate(layers):
            name = layer_name(layer)
            seen.add(name)
            layer_ro = ro or depth > 0
            image = _image_info(layers[depth:], dev.backend.size)
            if a.get("flat", False):        # (flat: no backing images inside)
                image.pop("backing-image", None)
            entry = _entry(name, layer.format, layer_ro, image, layer.filename,
                           len(layers) - depth - 1)
            if len(layers) > depth + 1:
                entry["backing_file"] = layers[depth + 1].filename
            out.append(entry)
            added = graph_of(s.machine).nodes.get(name)
            if added is not None:
                _set_read_only(graph_of(s.machine), added, layer_ro)
            if added is not None and added.file is not None:
                file_node = graph_of(s.machine).nodes[added.file]
                seen.add(file_node.name)
                out.append(_file_entry(file_node.name, layer.filename, file_node.read_only))
            else:
                file_ro = file_read_only(layer)
                out.append(_file_entry(file_layer_name(layer), layer.filename,
                                       layer_ro if file_ro is None else file_ro))
    for node in graph_of(s.machine).nodes.values():
        if node.name in seen or (node.file is not None and node.file in seen):
            continue
        if node.driver == "file":
            out.append(_file_entry(node.name, node.filename, node.read_only))
            continue
        opened = open_driver(node.filename, node.driver, readonly=True, force_share=True)
        try:
            image = _image_info([opened], node.size)
        finally:
            close_layers([opened])
        out.append(_entry(node.name, node.driver, node.read_only, image, node.filename, 0))
    return out


# -- jobs and snapshots onto added nodes -------------------------------------------------

def _target_node(s: QmpSession, a: dict[str, Any], mirror: bool = False) -> tuple[str, Node]:
    device, _dev = find_disk(s, a["device"])
    node = _added(graph_of(s.machine), a["target"])
    if node.driver == "file":
        node = Node(node.name, "raw", node.filename, node.size, node.read_only)
    if node.read_only:
        if mirror:      # (QEMU made the job before the target refused it)
            ident = a.get("job-id", device)
            for status in ("created", "null"):
                s.server.broadcast_event("JOB_STATUS_CHANGE", {"status": status, "id": ident})
        raise QmpError("Block node is read-only")
    return device, node


def _as_drive_job(a: dict[str, Any], device: str, node: Node) -> dict[str, Any]:
    """The arguments of the drive-* job that copies to ``node``'s image."""
    b = {k: v for k, v in a.items() if k not in ("device", "target")}
    b.setdefault("job-id", a["device"])
    return {"device": device, "target": node.filename, "format": node.driver,
            "mode": "existing", **b}


def _blockdev_mirror(s: QmpSession, a: dict[str, Any]) -> Any:

    device, node = _target_node(s, a, mirror=True)
    if _chain_use(s, node) is not None:
        raise QmpError(f"Block device {node.name} is in use")
    return _drive_mirror(s, _as_drive_job(a, device, node))


def _blockdev_backup(s: QmpSession, a: dict[str, Any]) -> Any:

    device, node = _target_node(s, a)
    _device, dev = find_disk(s, device)
    if _chain_use(s, node) == 0:
        raise QmpError("Source and target cannot be the same")
    if node.size != dev.backend.size:
        raise QmpError("Source and target image have different sizes")
    return _drive_backup(s, _as_drive_job(a, device, node))


def _blockdev_snapshot(s: QmpSession, a: dict[str, Any]) -> Any:
    from vmforge.block.jobs import snapshot_sync
    from vmforge.block.probe import driver_class

    device, dev = find_disk(s, a["node"])
    graph = graph_of(s.machine)
    overlay = _added(graph, a["overlay"])
    if _chain_use(s, overlay) is not None or graph.users(overlay.name) or \
            _job_use(s, overlay):
        raise QmpError("The overlay is already in use")
    if overlay.driver == "file" or not driver_class(overlay.driver).supports_backing:
        raise QmpError("The overlay does not support backing images")
    if overlay.backing is not None:
        raise QmpError("The overlay already has a backing image")
    _check_not_busy(device, dev)
    below = graph.nodes.get(layer_name(dev.backend.layers[0]))
    try:
        snapshot_sync(dev.backend, overlay.filename, format=overlay.driver, mode="existing",
                      device=device)
    except VmforgeError as exc:
        raise QmpError(str(exc)) from None
    if below is not None:       # reopened read-only as the overlay's backing (and stays so)
        _set_read_only(graph, below, True)
    return {}


def _set_read_only(graph: NodeGraph, node: Node, read_only: bool) -> None:
    node.read_only = read_only
    if node.file is not None:
        graph.nodes[node.file].read_only = read_only


#: the commands, in QEMU's schema order of their members
BLOCKDEV_COMMANDS: list[Command] = [
    Command("blockdev-add", _blockdev_add, {
        "driver": ("string", True), "node-name": ("string", False),
        "discard": ("string", False), "cache": ("object", False),
        "read-only": ("bool", False), "auto-read-only": ("bool", False),
        "force-share": ("bool", False), "detect-zeroes": ("string", False),
        "filename": ("string", False), "file": ("any", False), "backing": ("any", False)}),
    Command("blockdev-del", _blockdev_del, {"node-name": ("string", True)}),
    Command("query-named-block-nodes", _query_named_block_nodes, {"flat": ("bool", False)}),
    Command("blockdev-mirror", _blockdev_mirror, {
        "job-id": ("string", False), "device": ("string", True), "target": ("string", True),
        "replaces": ("string", False), "sync": ("string", True), "speed": ("int", False),
        "granularity": ("int", False), "buf-size": ("int", False),
        "on-source-error": ("string", False), "on-target-error": ("string", False),
        "filter-node-name": ("string", False), "copy-mode": ("string", False),
        **_JOB_OPTS}),
    Command("blockdev-backup", _blockdev_backup, {
        "job-id": ("string", False), "device": ("string", True), "target": ("string", True),
        "sync": ("string", True), "speed": ("int", False), "bitmap": ("string", False),
        "bitmap-mode": ("string", False), "compress": ("bool", False),
        "on-source-error": ("string", False), "on-target-error": ("string", False),
        **_JOB_OPTS, "filter-node-name": ("string", False), "x-perf": ("object", False)}),
    Command("blockdev-snapshot", _blockdev_snapshot, {
        "node": ("string", True), "overlay": ("string", True)}),
]

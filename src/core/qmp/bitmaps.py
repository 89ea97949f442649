"""QMP dirty bitmaps on a disk's node, as QEMU 7.2 answers them:
``block-dirty-bitmap-add`` (``granularity``, ``persistent``, ``disabled``),
``-remove``, ``-clear``, ``-enable``, ``-disable``, and the ``dirty-bitmaps`` that
``query-block`` shows.

A bitmap belongs to the disk's active layer (its node name: ``hd0`` or the top
node's); a persistent one lives in the qcow2 image and is tracked by the disk's
:class:`~vmforge.block.backend.BlockBackend` while open, stored back when the
image closes (:mod:`vmforge.block.bitmap`), as QEMU's ``qcow2`` driver does.
Bitmaps on nodes that are not a disk's active layer are refused by name.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from vmforge.block.bitmap import DirtyBitmap
from vmforge.block.nodes import layer_name
from vmforge.qmp.commands import Command, QmpError, QmpSession, _disks

__all__ = ["BITMAP_COMMANDS", "dirty_bitmaps_info"]

#: QEMU's BDRV_BITMAP_MAX_NAME_SIZE
MAX_NAME = 1023

_LOCK = threading.Lock()
#: the bitmaps QMP added, per backend, oldest first: (node name, bitmap, persistent)
_ADDED: weakref.WeakKeyDictionary[Any, list[tuple[str, DirtyBitmap, bool]]] = \
    weakref.WeakKeyDictionary()


def _added(backend: Any) -> list[tuple[str, DirtyBitmap, bool]]:
    with _LOCK:
        return _ADDED.setdefault(backend, [])


def _named(backend: Any) -> list[tuple[DirtyBitmap, bool]]:
    """(bitmap, persistent) of the disk's active layer, newest first as QEMU lists:
    the image's persistent ones loaded at open, then those QMP added."""
    top = layer_name(backend.layers[0])
    tracked = backend.persistent_bitmaps()
    added = _added(backend)
    out = [(bm, True) for bm in tracked if not any(bm is b for _n, b, _p in added)]
    out += [(bm, p) for node, bm, p in added
            if (p and any(bm is t for t in tracked)) or (not p and node == top)]
    return out[::-1]


def dirty_bitmaps_info(backend: Any) -> list[dict[str, Any]]:
    """``BlockDirtyInfo`` of each bitmap of the disk's active layer."""
    return [{"name": bm.name, "recording": bm.enabled, "persistent": persistent,
             "busy": False, "granularity": bm.granularity, "count": bm.count()}
            for bm, persistent in _named(backend)]


def _disk(s: QmpSession, node: str, missing: str) -> Any:
    for device, _qdev, dev in _disks(s.machine):
        if node in (device, layer_name(dev.backend.layers[0])):
            return device, dev.backend
    raise QmpError(missing)


def _lookup(s: QmpSession, a: dict[str, Any]) -> tuple[Any, DirtyBitmap, bool]:
    _device, backend = _disk(s, a["node"], f"Node '{a['node']}' not found")
    for bm, persistent in _named(backend):
        if bm.name == a["name"]:
            return backend, bm, persistent
    raise QmpError(f"Dirty bitmap '{a['name']}' not found")


def _default_granularity(backend: Any) -> int:
    """QEMU's bdrv_get_default_bitmap_granularity: the cluster size within
    [4 KiB, 64 KiB], else 64 KiB."""
    cluster = backend.info()[0].cluster_size
    return min(max(4096, cluster), 65536) if cluster else 65536


def _add(s: QmpSession, a: dict[str, Any]) -> Any:
    name = a["name"]
    if not name:
        raise QmpError("Bitmap name cannot be empty")
    node = a["node"]
    device, backend = _disk(s, node, f"Cannot find device='{node}' nor node-name='{node}'")
    if "granularity" in a:
        granularity = a["granularity"]
        if granularity < 512 or granularity & (granularity - 1):
            raise QmpError("Granularity must be power of 2 and at least 512")
    else:
        granularity = _default_granularity(backend)
    persistent = bool(a.get("persistent", False))
    top = backend.layers[0].driver
    if persistent and not hasattr(top, "add_bitmap"):
        raise QmpError(f"Can't store persistent bitmaps to {device}: Operation not supported")
    if any(bm.name == name for bm, _p in _named(backend)):
        raise QmpError(f"Bitmap already exists: {name}")
    if len(name) > MAX_NAME:
        raise QmpError("Bitmap name too long")
    bitmap = DirtyBitmap(backend.size, granularity, name)
    bitmap.enabled = not a.get("disabled", False)
    if persistent:
        # in the image at once, in use while the disk holds it (stored on close)
        top.add_bitmap(name, granularity, bitmap.enabled)
        top.set_bitmaps_in_use([name], True)
        top.bitmaps_tracked = True
        backend.track_persistent(bitmap)
    else:
        backend.add_dirty_bitmap(bitmap)
    _added(backend).append((layer_name(backend.layers[0]), bitmap, persistent))
    return {}


def _remove(s: QmpSession, a: dict[str, Any]) -> Any:
    backend, bitmap, persistent = _lookup(s, a)
    if persistent:
        backend.track_persistent(bitmap, add=False)
        backend.layers[0].driver.remove_bitmap(bitmap.name)
    else:
        backend.remove_dirty_bitmap(bitmap)
    entries = _added(backend)
    entries[:] = [e for e in entries if e[1] is not bitmap]
    return {}


def _clear(s: QmpSession, a: dict[str, Any]) -> Any:
    _lookup(s, a)[1].clear_all()
    return {}


def _enable(enabled: bool) -> Any:
    def handler(s: QmpSession, a: dict[str, Any]) -> Any:
        backend, bitmap, persistent = _lookup(s, a)
        bitmap.enabled = enabled
        if persistent:      # (the image's 'auto' flag: QEMU stores it so on close)
            backend.layers[0].driver.set_bitmap_enabled(bitmap.name, enabled)
        return {}
    return handler


_NODE_NAME = {"node": ("string", True), "name": ("string", True)}

BITMAP_COMMANDS: list[Command] = [
    Command("block-dirty-bitmap-add", _add, {
        **_NODE_NAME, "granularity": ("int", False), "persistent": ("bool", False),
        "disabled": ("bool", False)}),
    Command("block-dirty-bitmap-remove", _remove, _NODE_NAME),
    Command("block-dirty-bitmap-clear", _clear, _NODE_NAME),
    Command("block-dirty-bitmap-enable", _enable(True), _NODE_NAME),
    Command("block-dirty-bitmap-disable", _enable(False), _NODE_NAME),
]

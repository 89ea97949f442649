"""QMP's NBD server commands, as QEMU 7.2 answers them (``blockdev-nbd.c``,
``block/export/export.c``), over :class:`vmforge.block.nbd.server.NbdServer`.

``nbd-server-start`` (``addr`` as QAPI's SocketAddressLegacy: ``inet`` or ``unix``,
``max-connections``), ``nbd-server-add`` (a disk by its device name, ``name``
defaulting to it, ``writable``, ``description``), ``block-export-add`` with
``type: nbd``, ``nbd-server-remove`` (``mode`` safe or hard), ``block-export-del``,
``query-block-exports`` and ``nbd-server-stop``; BLOCK_EXPORT_DELETED when an
export goes.  One server per machine; its clients are served on threads of their
own, so a guest's disk exported here is read and written while the guest runs.
TLS and dirty-bitmap exports are refused by name.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from vmforge.block.nbd import NbdError, socket_address
from vmforge.block.nbd.server import NbdServer
from vmforge.qmp.block_jobs import _enum, _unsupported
from vmforge.qmp.commands import Command, QmpError, QmpSession, _disks, _node_name

__all__ = ["NBD_COMMANDS", "machine_nbd_server"]

_SERVERS: weakref.WeakKeyDictionary[Any, NbdServer] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _export_deleted(machine: Any, ident: str) -> None:
    """BLOCK_EXPORT_DELETED to every QMP server of the machine (QEMU sends events to
    all monitors; an export removed from the human monitor too)."""
    for listener in list(machine.state_listeners):
        broadcast = getattr(getattr(listener, "__self__", None), "broadcast_event", None)
        if callable(broadcast):
            broadcast("BLOCK_EXPORT_DELETED", {"id": ident})


def machine_nbd_server(machine: Any) -> NbdServer | None:
    """The NBD server started on ``machine`` (None: not running)."""
    with _LOCK:
        return _SERVERS.get(machine)


def _running(s: QmpSession) -> NbdServer:
    server = machine_nbd_server(s.machine)
    if server is None:
        raise QmpError("NBD server not running")
    return server


def _start(s: QmpSession, a: dict[str, Any]) -> Any:
    _unsupported(a, "tls-creds", "tls-authz")
    addr = a["addr"]
    kind = addr.get("type")
    if kind is None:
        raise QmpError("Parameter 'type' is missing")
    if kind not in ("inet", "unix", "vsock", "fd"):
        raise QmpError(f"Parameter 'type' does not accept value '{kind}'")
    if kind in ("vsock", "fd"):
        raise QmpError(f"vmforge's NBD server does not listen on {kind} addresses")
    data = addr.get("data")
    if not isinstance(data, dict):
        raise QmpError("Parameter 'data' is missing")
    maxc = a.get("max-connections", 0)
    if maxc < 0:
        raise QmpError("max-connections must be between 0 and UINT32_MAX")
    with _LOCK:
        if s.machine in _SERVERS:
            raise QmpError("NBD server already running")
        try:
            server = NbdServer(socket_address({"type": kind, **data}), max_connections=maxc)
            server.start()
        except NbdError as exc:
            raise QmpError(str(exc)) from None
        _SERVERS[s.machine] = server
    return {}


def _lookup(s: QmpSession, device: str | None, node: str) -> Any:
    """A disk by its device name or node name (QEMU's ``bdrv_lookup_bs``)."""
    for name, _qdev, dev in _disks(s.machine):
        if name == device or _node_name(dev) == node:
            return dev
    raise QmpError(f"Cannot find device='{device or ''}' nor node-name='{node}'")


def _by_id(server: NbdServer | None, ident: str) -> str | None:
    """The name of the export whose block export id is ``ident``."""
    for exp in list(server.exports.values()) if server is not None else []:
        if exp.ident == ident:
            return exp.name
    return None


def _add_export(s: QmpSession, ident: str, name: str, device: str | None, node: str,
                writable: bool, description: str, downgrade: bool) -> Any:
    server = _running(s)
    if _by_id(server, ident) is not None:
        raise QmpError(f"Block export id '{ident}' is already in use")
    dev = _lookup(s, device, node)
    backend = dev.backend
    readonly = bool(backend.readonly or getattr(dev, "readonly", False))
    if writable and readonly:
        if not downgrade:
            raise QmpError("Cannot export read-only node as writable")
        writable = False          # nbd-server-add downgrades instead, as QEMU's
    try:
        server.add_export(name, backend, writable=writable, description=description,
                          ident=ident)
    except NbdError as exc:
        raise QmpError(str(exc)) from None
    return {}


def _nbd_server_add(s: QmpSession, a: dict[str, Any]) -> Any:
    _unsupported(a, "bitmap")
    name = a.get("name", a["device"])
    return _add_export(s, name, name, a["device"], a["device"], a.get("writable", False),
                       a.get("description", ""), downgrade=True)


def _block_export_add(s: QmpSession, a: dict[str, Any]) -> Any:
    if a["type"] != "nbd":
        if a["type"] in ("vhost-user-blk", "fuse", "vduse-blk"):
            raise QmpError(f"vmforge has no {a['type']} exports")
        raise QmpError(f"Parameter 'type' does not accept value '{a['type']}'")
    _unsupported(a, "bitmaps", "allocation-depth", "iothread", "fixed-iothread")
    return _add_export(s, a["id"], a.get("name", a["node-name"]), None, a["node-name"],
                       a.get("writable", False), a.get("description", ""), downgrade=False)


def _remove(s: QmpSession, ident: str, mode: str) -> None:
    server = machine_nbd_server(s.machine)
    name = _by_id(server, ident)
    if server is None or name is None:
        raise QmpError(f"Export '{ident}' is not found")
    try:
        server.remove_export(name, hard=mode == "hard")
    except NbdError as exc:
        raise QmpError(str(exc)) from None
    _export_deleted(s.machine, ident)


def _nbd_server_remove(s: QmpSession, a: dict[str, Any]) -> Any:
    _remove(s, a["name"], _enum(a, "mode", ("safe", "hard"), "safe"))
    return {}


def _block_export_del(s: QmpSession, a: dict[str, Any]) -> Any:
    _remove(s, a["id"], _enum(a, "mode", ("safe", "hard"), "safe"))
    return {}


def _query_block_exports(s: QmpSession, a: dict[str, Any]) -> Any:
    server = machine_nbd_server(s.machine)
    if server is None:
        return []
    return [{"type": "nbd", "id": e.ident, "node-name": _backend_node(s, e.backend),
             "shutting-down": False} for e in list(server.exports.values())]


def _backend_node(s: QmpSession, backend: Any) -> str:
    for _name, _qdev, dev in _disks(s.machine):
        if dev.backend is backend:
            return _node_name(dev)
    return ""


def _nbd_server_stop(s: QmpSession, a: dict[str, Any]) -> Any:
    with _LOCK:
        server = _SERVERS.pop(s.machine, None)
    if server is None:
        raise QmpError("NBD server not running")
    idents = [e.ident for e in server.exports.values()]
    server.stop()
    for ident in idents:
        _export_deleted(s.machine, ident)
    return {}


NBD_COMMANDS = [
    Command("nbd-server-start", _start, {
        "addr": ("object", True), "tls-creds": ("string", False),
        "tls-authz": ("string", False), "max-connections": ("int", False)}),
    Command("nbd-server-add", _nbd_server_add, {
        "device": ("string", True), "name": ("string", False),
        "description": ("string", False), "writable": ("bool", False),
        "bitmap": ("string", False)}),
    Command("block-export-add", _block_export_add, {
        "type": ("string", True), "id": ("string", True), "fixed-iothread": ("bool", False),
        "iothread": ("string", False), "node-name": ("string", True),
        "writable": ("bool", False), "writethrough": ("bool", False),
        "name": ("string", False), "description": ("string", False),
        "bitmaps": ("array", False), "allocation-depth": ("bool", False)}),
    Command("nbd-server-remove", _nbd_server_remove, {
        "name": ("string", True), "mode": ("string", False)}),
    Command("block-export-del", _block_export_del, {
        "id": ("string", True), "mode": ("string", False)}),
    Command("query-block-exports", _query_block_exports),
    Command("nbd-server-stop", _nbd_server_stop),
]


# -- the human monitor -------------------------------------------------------------------

HMP_USAGE = {
    "nbd_server_start": "nbd_server_start [-a] [-w] host:port|unix:path -- serve block "
                        "devices over NBD (-a: every disk, -w: writable)",
    "nbd_server_add": "nbd_server_add [-w] device [name] -- export a disk over NBD",
    "nbd_server_remove": "nbd_server_remove [-f] name -- remove an NBD export "
                         "(-f: drop its clients)",
    "nbd_server_stop": "nbd_server_stop -- stop the NBD server",
}


def _hmp_address(text: str) -> dict[str, Any]:
    """QEMU's ``socket_parse``: ``unix:PATH`` or ``HOST:PORT``."""
    if text.startswith("unix:"):
        return {"type": "unix", "data": {"path": text[5:]}}
    host, sep, port = text.rpartition(":")
    if not sep:
        raise QmpError(f"address '{text}' is not HOST:PORT or unix:PATH")
    return {"type": "inet", "data": {"host": host.strip("[]"), "port": port}}


def hmp_nbd(machine: Any, command: str, args: list[str]) -> str:
    """The human monitor's ``nbd_server_*`` commands over the QMP ones (errors as
    ``Error: ...``, as QEMU's hmp_handle_error prints them)."""
    flags = {a for a in args if a.startswith("-")}
    words = [a for a in args if not a.startswith("-")]
    session = QmpSession(machine, server=None)
    low, high = {"nbd_server_start": (1, 1), "nbd_server_add": (1, 2),
                 "nbd_server_remove": (1, 1), "nbd_server_stop": (0, 0)}[command]
    if not low <= len(words) <= high:
        return f"{command}: usage: {HMP_USAGE[command].split(' -- ')[0]}"
    try:
        if command == "nbd_server_start":
            _start(session, {"addr": _hmp_address(words[0])})
            if "-a" in flags:          # every disk, under its device name
                for name, _qdev, _dev in _disks(machine):
                    _nbd_server_add(session, {"device": name, "writable": "-w" in flags})
        elif command == "nbd_server_add":
            a: dict[str, Any] = {"device": words[0], "writable": "-w" in flags}
            if len(words) > 1:
                a["name"] = words[1]
            _nbd_server_add(session, a)
        elif command == "nbd_server_remove":
            _remove(session, words[0], "hard" if "-f" in flags else "safe")
        else:
            _nbd_server_stop(session, {})
    except QmpError as exc:
        return f"Error: {exc.desc}"
    return ""

"""The QMP commands vmforge answers, with QEMU 7.2's argument checks and reply shapes.

Every handler runs on the machine's thread (the server hands it over with
:meth:`~vmforge.machine.Machine.call_soon`), so it reads and changes machine
state as a device would.  A handler returns the ``return`` value or raises
:class:`QmpError`; any other exception becomes a ``GenericError`` reply, never a
stopped machine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmforge.machine import Machine

__all__ = [
    "COMMANDS",
    "Command",
    "QmpError",
    "QmpSession",
    "check_arguments",
    "qemu_version",
    "reset_event_data",
    "shutdown_event_data",
]

#: the QEMU version whose QMP vmforge answers like (``query-version``'s ``qemu``)
QEMU_COMPAT = (7, 2, 0)


class QmpError(Exception):
    """A command failed: ``{"error": {"class": cls, "desc": desc}}``."""

    def __init__(self, desc: str, cls: str = "GenericError") -> None:
        super().__init__(desc)
        self.desc = desc
        self.cls = cls


@dataclass
class QmpSession:
    """What a handler may need besides the machine: the client's server."""

    machine: Machine
    server: Any
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[QmpSession, dict[str, Any]], Any]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    #: argument name -> (JSON type name, required)
    args: dict[str, tuple[str, bool]] = field(default_factory=dict)


_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "int": (int,), "bool": (bool,),
                                       "array": (list,), "object": (dict,),
                                       "any": (object,)}


def check_arguments(cmd: Command, arguments: dict[str, Any]) -> None:
    """QEMU's visitor: each member in schema order (missing, wrong type), then
    the members the schema does not have."""
    for name, (type_name, required) in cmd.args.items():
        if name not in arguments:
            if required:
                raise QmpError(f"Parameter '{name}' is missing")
            continue
        value = arguments[name]
        ok = isinstance(value, _TYPES[type_name]) and not (
            type_name == "int" and isinstance(value, bool))
        if not ok:
            raise QmpError(f"Invalid parameter type for '{name}', expected: {type_name}")
    for name in arguments:
        if name not in cmd.args:
            raise QmpError(f"Parameter '{name}' is unexpected")


def qemu_version() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        mine = version("vmforge")
    except PackageNotFoundError:
        mine = "unknown"
    major, minor, micro = QEMU_COMPAT
    return {"qemu": {"micro": micro, "minor": minor, "major": major},
            "package": f"vmforge {mine}"}


# -- events' data ----------------------------------------------------------------------

_SHUTDOWN_CAUSES = {
    "poweroff": (True, "guest-shutdown"),
    "reboot": (True, "guest-reset"),
    "fail": (True, "guest-panic"),
    "user": (False, "host-qmp-quit"),
    "timeout": (False, "host-signal"),
    "error": (False, "host-error"),
}


def shutdown_event_data(reason: str) -> dict[str, Any]:
    guest, cause = _SHUTDOWN_CAUSES.get(reason, (False, "host-error"))
    return {"guest": guest, "reason": cause}


def reset_event_data(reason: str) -> dict[str, Any]:
    if reason == "guest":
        return {"guest": True, "reason": "guest-reset"}
    return {"guest": False, "reason": "host-qmp-system-reset"}


# -- the commands ------------------------------------------------------------------------

def _query_version(s: QmpSession, a: dict[str, Any]) -> Any:
    return qemu_version()


def _query_commands(s: QmpSession, a: dict[str, Any]) -> Any:
    return [{"name": name} for name in COMMANDS]


def _query_status(s: QmpSession, a: dict[str, Any]) -> Any:
    m = s.machine
    if m.stopped:
        status = "shutdown"
    elif m.migration_runstate:
        status = m.migration_runstate
    elif m.paused:
        status = "paused"
    else:
        status = "running"
    return {"status": status, "singlestep": False, "running": status == "running"}


def _query_name(s: QmpSession, a: dict[str, Any]) -> Any:
    name = s.machine.config.extra.get("name")
    return {"name": name} if isinstance(name, str) else {}


def _cpu_target(m: Machine) -> str:
    target = getattr(m, "qmp_target", None)
    if isinstance(target, str):
        return target
    kind = type(m.cpus[0]).__name__.lower() if m.cpus else ""
    return "riscv64" if "riscv" in kind else kind or "unknown"


def _query_cpus_fast(s: QmpSession, a: dict[str, Any]) -> Any:
    m = s.machine
    target = _cpu_target(m)
    thread = threading.get_native_id()      # the harts run on the machine's thread
    path = "/machine/soc0/harts[{}]" if target.startswith("riscv") \
        else "/machine/unattached/device[{}]"
    return [{"thread-id": thread, "props": {"core-id": i}, "qom-path": path.format(i),
             "cpu-index": i, "target": target} for i in range(len(m.cpus))]


def _stop(s: QmpSession, a: dict[str, Any]) -> Any:
    s.machine.pause()
    return {}


def _cont(s: QmpSession, a: dict[str, Any]) -> Any:
    s.machine.resume()
    return {}


def _system_reset(s: QmpSession, a: dict[str, Any]) -> Any:
    s.machine.reset("user")       # on the machine's thread, between slices
    return {}


def _system_powerdown(s: QmpSession, a: dict[str, Any]) -> Any:
    # QEMU 7.2's riscv virt board has no power button: the event, and nothing else
    s.server.broadcast_event("POWERDOWN")
    powerdown = getattr(s.machine, "request_powerdown", None)
    if callable(powerdown):
        powerdown()
    return {}


def _quit(s: QmpSession, a: dict[str, Any]) -> Any:
    s.machine.request_shutdown("user", 0)
    return {}


def _human_monitor_command(s: QmpSession, a: dict[str, Any]) -> Any:
    from vmforge.chardev import NullChar
    from vmforge.monitor import Monitor

    monitor = s.extra.get("monitor")
    if monitor is None:
        monitor = s.extra["monitor"] = Monitor(s.machine, NullChar())
    if "cpu-index" in a and not 0 <= a["cpu-index"] < len(s.machine.cpus):
        raise QmpError("Parameter 'cpu-index' expects a valid CPU index")
    out = monitor.execute(a["command-line"])
    if not out:
        return ""
    return out.rstrip("\n").replace("\n", "\r\n") + "\r\n"


# -- block devices -----------------------------------------------------------------------

def _disks(m: Machine) -> list[tuple[str, str, Any]]:
    """(QMP device name, qdev path, virtio-blk device) of each disk, in device order."""
    out: list[tuple[str, str, Any]] = []
    drives = list(getattr(m.config, "drives", []))
    virtio_index = 0
    for index, transport in enumerate(m.devices):
        dev = getattr(transport, "dev", None)
        backend = getattr(dev, "backend", None)
        if backend is None or not hasattr(backend, "filename"):
            continue
        name = None
        blockdev = False
        for d in drives:
            if d.file in (getattr(dev, "drive", None), backend.filename):
                drives.remove(d)
                name = d.id if d.id is not None else None
                from vmforge.block.nodes import from_blockdev

                blockdev = from_blockdev(d)     # (a -blockdev disk: no device name)
                if name is None and d.interface == "virtio":
                    name = f"virtio{virtio_index}"
                    virtio_index += 1
                break
        out.append(("" if blockdev else name or f"disk{len(out)}",
                    f"/machine/peripheral-anon/device[{index}]", dev))
    return out


def _node_name(dev: Any) -> str:
    from vmforge.block.nodes import layer_name

    return layer_name(dev.backend.layers[0])


def _cache(mode: str) -> dict[str, bool]:
    return {"no-flush": mode == "unsafe", "direct": mode in ("none", "directsync"),
            "writeback": mode not in ("writethrough", "directsync")}


def _actual_size(path: str) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def _image_info(layers: list[Any], size: int) -> dict[str, Any]:
    top = layers[0]
    info: dict[str, Any] = {"virtual-size": size, "filename": top.filename,
                            "format": top.format, "actual-size": _actual_size(top.filename),
                            "dirty-flag": False}
    if len(layers) > 1:
        # as recorded in the image, and as opened (QEMU's backing-filename and
        # full-backing-filename)
        info["backing-filename"] = top.driver.backing_filename or layers[1].filename
        info["full-backing-filename"] = layers[1].filename
        if top.driver.backing_format:
            info["backing-filename-format"] = top.driver.backing_format
        info["backing-image"] = _image_info(layers[1:], size)
    return info


def _query_block(s: QmpSession, a: dict[str, Any]) -> Any:
    out = []
    for name, qdev, dev in _disks(s.machine):
        backend = dev.backend
        layers = list(getattr(backend, "layers", []))
        inserted: dict[str, Any] = {
            "iops_rd": 0, "detect_zeroes": "off", "iops_wr": 0,
            "ro": bool(dev.readonly or backend.readonly), "node-name": _node_name(dev),
            "backing_file_depth": max(0, len(layers) - 1), "drv": backend.format,
            "iops": 0, "bps_wr": 0, "write_threshold": 0, "encrypted": False,
            "bps": 0, "bps_rd": 0,
            "cache": _cache(str(getattr(dev, "cache", "writeback"))),
            "file": backend.filename,
        }
        if layers:
            inserted["image"] = _image_info(layers, backend.size)
        if len(layers) > 1:
            inserted["backing_file"] = layers[1].filename
        from vmforge.qmp.bitmaps import dirty_bitmaps_info

        if bitmaps := dirty_bitmaps_info(backend):
            inserted["dirty-bitmaps"] = bitmaps
        out.append({"io-status": "failed" if getattr(dev, "broken", False) else "ok",
                    "device": name, "locked": False, "removable": False,
                    "inserted": inserted, "qdev": qdev, "type": "unknown"})
    return out


def _block_stats(dev: Any) -> dict[str, Any]:
    st = dev.statistics()
    zero_keys = ("unmap_merged", "flush_total_time_ns", "wr_highest_offset",
                 "wr_total_time_ns", "failed_wr_operations", "failed_rd_operations",
                 "wr_merged", "failed_unmap_operations", "failed_flush_operations",
                 "rd_total_time_ns", "invalid_unmap_operations", "unmap_bytes", "rd_merged",
                 "unmap_total_time_ns", "invalid_flush_operations", "invalid_wr_operations",
                 "invalid_rd_operations")
    stats: dict[str, Any] = dict.fromkeys(zero_keys, 0)
    stats.update({
        "rd_operations": st.get("reads", 0), "rd_bytes": st.get("bytes_read", 0),
        "wr_operations": st.get("writes", 0), "wr_bytes": st.get("bytes_written", 0),
        "flush_operations": st.get("flushes", 0),
        "unmap_operations": st.get("discards", 0),
        "timed_stats": [],
        # failed and invalid requests, and times, are not accounted (QEMU's flags say so)
        "account_invalid": False, "account_failed": False,
    })
    return stats


def _query_blockstats(s: QmpSession, a: dict[str, Any]) -> Any:
    return [{"device": name, "stats": _block_stats(dev), "node-name": _node_name(dev),
             "qdev": qdev} for name, qdev, dev in _disks(s.machine)]


def _capabilities(s: QmpSession, a: dict[str, Any]) -> Any:
    # only reached after negotiation: the server answers the first one itself
    raise QmpError("Capabilities negotiation is already complete, command ignored",
                   "CommandNotFound")


COMMANDS: dict[str, Command] = {c.name: c for c in [
    Command("qmp_capabilities", _capabilities, {"enable": ("array", False)}),
    Command("query-version", _query_version),
    Command("query-commands", _query_commands),
    Command("query-status", _query_status),
    Command("query-name", _query_name),
    Command("query-cpus-fast", _query_cpus_fast),
    Command("query-block", _query_block),
    Command("query-blockstats", _query_blockstats, {"query-nodes": ("bool", False)}),
    Command("stop", _stop),
    Command("cont", _cont),
    Command("system_reset", _system_reset),
    Command("system_powerdown", _system_powerdown),
    Command("quit", _quit),
    Command("human-monitor-command", _human_monitor_command,
            {"command-line": ("string", True), "cpu-index": ("int", False)}),
]}


def _register_block_jobs() -> None:
    from vmforge.qmp.block_jobs import BLOCK_JOB_COMMANDS

    COMMANDS.update((c.name, c) for c in BLOCK_JOB_COMMANDS)


_register_block_jobs()


def _register_migration() -> None:
    from vmforge.qmp.migration import MIGRATION_COMMANDS

    COMMANDS.update((c.name, c) for c in MIGRATION_COMMANDS)


_register_migration()


def _register_nbd() -> None:
    from vmforge.qmp.nbd import NBD_COMMANDS

    COMMANDS.update((c.name, c) for c in NBD_COMMANDS)


_register_nbd()


def _register_devices() -> None:
    from vmforge.qmp.devices import DEVICE_COMMANDS

    COMMANDS.update((c.name, c) for c in DEVICE_COMMANDS)


_register_devices()


def _register_blockdev() -> None:
    from vmforge.qmp.blockdev import BLOCKDEV_COMMANDS

    COMMANDS.update((c.name, c) for c in BLOCKDEV_COMMANDS)


_register_blockdev()


def _register_bitmaps() -> None:
    from vmforge.qmp.bitmaps import BITMAP_COMMANDS

    COMMANDS.update((c.name, c) for c in BITMAP_COMMANDS)


_register_bitmaps()

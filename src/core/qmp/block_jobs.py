"""QMP block jobs as QEMU 7.2 offers them, over :mod:`vmforge.block.jobs`.

``drive-mirror``, ``block-stream``, ``block-commit``, ``drive-backup`` start a
job on a disk (the engine copies on its own thread while the guest runs);
``blockdev-snapshot-sync`` puts a new overlay on top; ``query-block-jobs`` /
``query-jobs`` list them; ``block-job-*`` and ``job-*`` drive them through
QEMU's job verbs (the same state table, so the same refusals); the engine's
events (JOB_STATUS_CHANGE, BLOCK_JOB_READY, BLOCK_JOB_COMPLETED,
BLOCK_JOB_CANCELLED, BLOCK_JOB_ERROR...) go to the QMP clients as they happen.

Argument checks and error texts are QEMU's (``blockdev.c``, ``job.c``,
``job-qmp.c``); what vmforge does not do (node names, dirty-bitmap syncs,
error policies other than ``report``...) is refused by name rather than
ignored.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

from vmforge.block.jobs import (
    BlockJob,
    JobListener,
    JobRegistry,
    snapshot_sync,
    start_backup,
    start_commit,
    start_mirror,
    start_stream,
)
from vmforge.errors import VmforgeError
from vmforge.qmp.commands import Command, QmpError, QmpSession, _disks

if TYPE_CHECKING:
    from vmforge.machine import Machine

__all__ = ["BLOCK_JOB_COMMANDS", "hmp_block_jobs", "machine_jobs"]

MIRROR_SYNC = ("top", "full", "none", "incremental", "bitmap")
NEW_IMAGE_MODES = ("existing", "absolute-paths")
ON_ERROR = ("report", "ignore", "enospc", "stop", "auto")
COPY_MODES = ("background", "write-blocking")
BITMAP_MODES = ("on-success", "never", "always")
#: the largest and smallest mirror granularity QEMU takes
GRANULARITY_RANGE = (512, 64 << 20)

# -- the jobs of each machine ------------------------------------------------------------

_REGISTRIES: weakref.WeakKeyDictionary[Any, JobRegistry] = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK = threading.Lock()
_EVENTS_LOCK = threading.Lock()


def machine_jobs(machine: Machine) -> JobRegistry:
    """The block jobs of ``machine`` (a job leaves once dismissed: status ``null``)."""
    with _REGISTRIES_LOCK:
        registry = _REGISTRIES.get(machine)
        if registry is None:
            registry = _REGISTRIES[machine] = JobRegistry()
        return registry


def _listener(session: QmpSession) -> JobListener:
    """The engine's events to the QMP clients.  A job's end is sent as QEMU's main
    loop sends it, at once: BLOCK_JOB_COMPLETED/CANCELLED is held back until the job
    has concluded (and, auto-dismissed, is gone), so a client that reacts to it
    finds the job in its final state."""
    server = session.server
    held: list[tuple[str, dict[str, Any]]] = []

    def on_event(job: BlockJob, name: str, data: dict[str, Any]) -> None:
        # on the job's thread: broadcast_event may be called from any thread
        with _EVENTS_LOCK:      # what is sent together is not interleaved with others
            held.append((name, data))
            if name in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"):
                return
            if name == "JOB_STATUS_CHANGE" and data.get("status") == "concluded" \
                    and job.auto_dismiss and len(held) > 1:
                return
            for event in held:
                server.broadcast_event(*event)
            held.clear()

    return on_event


# -- looking things up -------------------------------------------------------------------

def _job_by_id(session: QmpSession, ident: str, *, block: bool) -> BlockJob:
    job = machine_jobs(session.machine).get(ident)
    if job is None:
        if block:
            raise QmpError(f"Block job '{ident}' not found", "DeviceNotActive")
        raise QmpError("Job not found")
    return job


def _root_disk(session: QmpSession, device: str | None, node: str | None = None) -> Any:
    """The virtio-blk device named ``device`` (QEMU's ``bdrv_lookup_bs``)."""
    from vmforge.block.nodes import layer_name

    for name, _qdev, dev in _disks(session.machine):
        if device is not None and name == device:
            return name, dev
        if node is not None and layer_name(dev.backend.layers[0]) == node:
            return name, dev        # (by its active layer's node name)
    raise QmpError(f"Cannot find device='{device or ''}' nor node-name='{node or ''}'")


def _check_root(dev: Any) -> None:
    """``qmp_get_root_bs``: a job puts its filter node above the disk."""
    if dev.backend.job is not None:
        raise QmpError("Need a root block node")


def _check_not_busy(device: str, dev: Any) -> None:
    job = dev.backend.job
    if job is not None:
        raise QmpError(f"Node '{device}' is busy: block device is in use by block job: "
                       f"{job.type}")


def _find_in_chain(backend: Any, name: str, start: int = 0) -> int:
    """The depth of the layer called ``name`` (as given, or the same file) from
    ``start`` down (QEMU's ``bdrv_find_backing_image``), or -1."""
    layers = list(backend.layers)
    wanted = os.path.realpath(name) if os.path.exists(name) else None
    for depth in range(start, len(layers)):
        filename = layers[depth].filename
        if filename == name or (wanted is not None and os.path.realpath(filename) == wanted):
            return depth
    return -1


# -- argument checks ---------------------------------------------------------------------

def _enum(a: dict[str, Any], name: str, values: tuple[str, ...], default: str) -> str:
    value = a.get(name, default)
    if value not in values:
        raise QmpError(f"Parameter '{name}' does not accept value '{value}'")
    return str(value)


def _unsupported(a: dict[str, Any], *names: str) -> None:
    for name in names:
        if name in a:
            raise QmpError(f"Parameter '{name}' is not supported by vmforge")


def _only(a: dict[str, Any], name: str, allowed: Any) -> None:
    if name in a and a[name] != allowed:
        raise QmpError(f"Parameter '{name}' other than {allowed!r} is not supported by "
                       "vmforge")


def _speed(a: dict[str, Any]) -> int:
    speed = int(a.get("speed", 0))
    if speed < 0:
        raise QmpError("Parameter 'speed' expects a non-negative value")
    return speed


def _job_id(session: QmpSession, a: dict[str, Any], device: str) -> str:
    ident = a.get("job-id", device)      # (its form is the engine's to check)
    try:
        machine_jobs(session.machine).check_id(ident)
    except VmforgeError as exc:
        raise QmpError(str(exc)) from None
    return str(ident)


def _format(a: dict[str, Any]) -> str | None:
    from vmforge.block.probe import format_names

    fmt = a.get("format")
    if fmt is not None and fmt not in format_names():
        raise QmpError(f"Unknown file format '{fmt}'")
    return fmt if fmt is None else str(fmt)


def _job_options(a: dict[str, Any]) -> dict[str, Any]:
    """What every job takes: QEMU's auto-finalize and auto-dismiss (the engine's
    filter is not a node that can be named)."""
    _unsupported(a, "filter-node-name")
    return {"auto_finalize": bool(a.get("auto-finalize", True)),
            "auto_dismiss": bool(a.get("auto-dismiss", True))}


def _target(a: dict[str, Any], mode: str, key: str = "target") -> str:
    target = str(a[key])
    from vmforge.block.nbd import is_nbd_name

    if mode == "existing" and not os.path.exists(target) and not is_nbd_name(target):
        raise QmpError(f"Could not open '{target}': No such file or directory")
    return target


def _start(session: QmpSession, start: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        start(*args, on_event=_listener(session), registry=machine_jobs(session.machine),
              **kwargs)
    except VmforgeError as exc:
        raise QmpError(str(exc)) from None
    return {}


# -- starting jobs -----------------------------------------------------------------------

def _copy_to_target(s: QmpSession, a: dict[str, Any]) -> tuple[str, Any, str, str]:
    """What drive-mirror and drive-backup check alike: the disk (a root: no job on
    it), ``sync``, ``mode``, the error policies (QEMU's default only)."""
    device, dev = _root_disk(s, a["device"], a["device"])
    _check_root(dev)
    sync = _enum(a, "sync", MIRROR_SYNC, "full")
    mode = _enum(a, "mode", NEW_IMAGE_MODES, "absolute-paths")
    for name in ("on-source-error", "on-target-error"):
        _enum(a, name, ON_ERROR, "report")
        _only(a, name, "report")
    return device, dev, sync, mode


def _target_format(a: dict[str, Any], dev: Any, mode: str) -> tuple[str | None, str]:
    """The target's format (by default the disk's, unless it exists) and path."""
    fmt = _format(a)
    if fmt is None and mode != "existing":
        fmt = dev.backend.format
    return fmt, _target(a, mode)


def _drive_mirror(s: QmpSession, a: dict[str, Any]) -> Any:
    device, dev, sync, mode = _copy_to_target(s, a)
    _enum(a, "copy-mode", COPY_MODES, "background")
    _only(a, "copy-mode", "background")
    _unsupported(a, "node-name", "replaces")
    _only(a, "unmap", True)
    options = _job_options(a)
    fmt, target = _target_format(a, dev, mode)
    if sync in ("incremental", "bitmap"):
        raise QmpError(f"Sync mode '{sync}' not supported")
    granularity = int(a.get("granularity", 0))
    if granularity and not GRANULARITY_RANGE[0] <= granularity <= GRANULARITY_RANGE[1]:
        raise QmpError("Parameter 'granularity' expects a value in range [512B, 64MB]")
    if granularity & (granularity - 1):
        raise QmpError("Parameter 'granularity' expects a power of 2")
    buf_size = int(a.get("buf-size", 0))
    if buf_size < 0:
        raise QmpError("Parameter 'buf-size' expects a non-negative value")
    speed = _speed(a)
    ident = _job_id(s, a, device)
    return _start(s, start_mirror, dev.backend, target, device=device,
                  job_id=ident, format=fmt, sync=sync, mode=mode, speed=speed,
                  granularity=granularity, buf_size=buf_size, **options)


def _drive_backup(s: QmpSession, a: dict[str, Any]) -> Any:
    device, dev, sync, mode = _copy_to_target(s, a)
    _enum(a, "bitmap-mode", BITMAP_MODES, "on-success")
    _unsupported(a, "bitmap", "bitmap-mode", "x-perf")
    _only(a, "compress", False)
    options = _job_options(a)
    fmt, target = _target_format(a, dev, mode)
    if sync in ("incremental", "bitmap"):
        raise QmpError(f"must provide a valid bitmap name for '{sync}' sync mode")
    speed = _speed(a)
    ident = _job_id(s, a, device)
    return _start(s, start_backup, dev.backend, target, device=device,
                  job_id=ident, format=fmt, sync=sync, mode=mode, speed=speed, **options)


def _block_stream(s: QmpSession, a: dict[str, Any]) -> Any:
    device, dev = _root_disk(s, a["device"], a["device"])
    if "base" in a and "base-node" in a:
        raise QmpError("'base' and 'base-node' cannot be specified at the same time")
    _unsupported(a, "bottom", "backing-file")
    _enum(a, "on-error", ON_ERROR, "report")
    _only(a, "on-error", "report")
    options = _job_options(a)
    base = a.get("base")
    if "base-node" in a:        # (a node name: vmforge.qmp.blockdev's)
        from vmforge.qmp.blockdev import chain_depth

        depth = chain_depth(s, dev.backend, a["base-node"])
        if not depth:
            raise QmpError(f"Node '{a['base-node']}' is not a backing image of '{device}'")
        base = dev.backend.layers[depth].filename
    if base is not None and _find_in_chain(dev.backend, base, 1) < 0:
        raise QmpError(f"Can't find '{base}' in the backing chain")
    _check_not_busy(device, dev)
    speed = _speed(a)
    ident = _job_id(s, a, device)
    return _start(s, start_stream, dev.backend, device=device, base=base,
                  job_id=ident, speed=speed, **options)


def _block_commit(s: QmpSession, a: dict[str, Any]) -> Any:
    device = a["device"]
    try:
        device, dev = _root_disk(s, device, device)
    except QmpError:
        raise QmpError(f"Device '{device}' not found", "DeviceNotFound") from None
    _check_root(dev)
    _unsupported(a, "backing-file")
    _enum(a, "on-error", ON_ERROR, "report")
    _only(a, "on-error", "report")
    options = _job_options(a)
    layers = list(dev.backend.layers)
    top = a.get("top")
    if "top-node" in a and top is not None:
        raise QmpError("'top-node' and 'top' are mutually exclusive")
    top_depth = 0 if top is None else _find_in_chain(dev.backend, top)
    if "top-node" in a:         # (node names: vmforge.qmp.blockdev's)
        top_depth = _node_depth(s, dev.backend, a["top-node"], 0)
    if top_depth < 0:
        raise QmpError(f"Top image file {top} not found")
    base = a.get("base")
    if "base-node" in a and base is not None:
        raise QmpError("'base-node' and 'base' are mutually exclusive")
    if "base-node" in a:
        base_depth = _node_depth(s, dev.backend, a["base-node"], top_depth)
        if base_depth == top_depth:
            raise QmpError("cannot commit an image into itself")
        base = layers[base_depth].filename
    if base is not None:
        if _find_in_chain(dev.backend, base, top_depth + 1) < 0:
            raise QmpError(f"Can't find '{base}' in the backing chain")
    elif top_depth + 1 >= len(layers):
        # QEMU's base defaults to the bottom of the chain: here the top itself
        raise QmpError("cannot commit an image into itself")
    speed = _speed(a)
    ident = _job_id(s, a, device)
    return _start(s, start_commit, dev.backend, device=device,
                  top=None if top_depth == 0 else layers[top_depth].filename, base=base,
                  job_id=ident, speed=speed, **options)


def _node_depth(s: QmpSession, backend: Any, name: str, start: int) -> int:
    """block-commit's ``top-node``/``base-node``: its depth, at ``start`` or below."""
    from vmforge.qmp.blockdev import chain_depth

    depth = chain_depth(s, backend, name)
    if depth is None or depth < start:
        raise QmpError(f"'{name}' is not in this backing file chain")
    return depth


def _snapshot_sync(s: QmpSession, a: dict[str, Any]) -> Any:
    device, dev = _root_disk(s, a.get("device"), a.get("node-name"))
    _unsupported(a, "node-name", "snapshot-node-name")
    mode = _enum(a, "mode", NEW_IMAGE_MODES, "absolute-paths")
    fmt = _format(a) or "qcow2"
    target = _target(a, mode, "snapshot-file")
    _check_not_busy(device, dev)
    if _find_in_chain(dev.backend, target) == 0:
        raise QmpError("Error: Trying to create an image with the same filename as the "
                       "backing file")
    try:
        snapshot_sync(dev.backend, target, format=fmt, mode=mode, device=device)
    except VmforgeError as exc:
        raise QmpError(str(exc)) from None
    return {}


# -- listing and driving jobs ------------------------------------------------------------

def _query_block_jobs(s: QmpSession, a: dict[str, Any]) -> Any:
    return machine_jobs(s.machine).query()


def hmp_block_jobs(machine: Machine) -> str:
    """The human monitor's ``info block-jobs``, in QEMU's words."""
    lines = []
    for job in machine_jobs(machine).jobs():
        what = f"Streaming device {job.id}" if job.type == "stream" else \
            f"Type {job.type}, device {job.id}"
        lines.append(f"{what}: Completed {job.offset} of {job.len} bytes, speed limit "
                     f"{job.speed} bytes/s")
    return "\n".join(lines) or "No active jobs"


def _query_jobs(s: QmpSession, a: dict[str, Any]) -> Any:
    out = []
    for job in machine_jobs(s.machine).jobs():
        info: dict[str, Any] = {"current-progress": job.offset, "status": job.status,
                                "total-progress": job.len, "type": job.type, "id": job.id}
        if job.error is not None:
            info["error"] = job.error
        out.append(info)
    return out


def _verb(job: BlockJob, verb: str, *args: Any) -> Any:
    """Apply a verb; the engine refuses it with QEMU's words (its state table)."""
    try:
        getattr(job, verb)(*args)
    except VmforgeError as exc:
        raise QmpError(str(exc)) from None
    return {}


def _set_speed(s: QmpSession, a: dict[str, Any]) -> Any:
    job = _job_by_id(s, a["device"], block=True)
    if a["speed"] < 0 and job.status in ("created", "running", "paused", "ready", "standby"):
        raise QmpError("Parameter 'speed' expects a non-negative value")
    return _verb(job, "set_speed", a["speed"])


def _block_job(verb: str) -> Any:
    """``block-job-VERB``: the job by its id, given as ``device`` (or ``id``)."""
    def handler(s: QmpSession, a: dict[str, Any]) -> Any:
        job = _job_by_id(s, str(a.get("device", a.get("id"))), block=True)
        if verb == "cancel":
            return _verb(job, "cancel", bool(a.get("force", False)))
        return _verb(job, verb)
    return handler


def _job(verb: str) -> Any:
    """``job-VERB``: the same verbs; ``job-cancel`` is QEMU's forced cancel."""
    def handler(s: QmpSession, a: dict[str, Any]) -> Any:
        job = _job_by_id(s, a["id"], block=False)
        return _verb(job, verb, True) if verb == "cancel" else _verb(job, verb)
    return handler


_JOB_OPTS: dict[str, tuple[str, bool]] = {"auto-finalize": ("bool", False),
                                          "auto-dismiss": ("bool", False)}
_ID = {"id": ("string", True)}
_DEVICE = {"device": ("string", True)}

#: the commands, in QEMU's schema order of their members
BLOCK_JOB_COMMANDS: list[Command] = [
    Command("drive-mirror", _drive_mirror, {
        "job-id": ("string", False), "device": ("string", True), "target": ("string", True),
        "format": ("string", False), "node-name": ("string", False),
        "replaces": ("string", False), "sync": ("string", True), "mode": ("string", False),
        "speed": ("int", False), "granularity": ("int", False), "buf-size": ("int", False),
        "on-source-error": ("string", False), "on-target-error": ("string", False),
        "unmap": ("bool", False), "copy-mode": ("string", False), **_JOB_OPTS}),
    Command("drive-backup", _drive_backup, {
        "job-id": ("string", False), "device": ("string", True), "target": ("string", True),
        "format": ("string", False), "sync": ("string", True), "mode": ("string", False),
        "speed": ("int", False), "bitmap": ("string", False),
        "bitmap-mode": ("string", False), "compress": ("bool", False),
        "on-source-error": ("string", False), "on-target-error": ("string", False),
        **_JOB_OPTS, "filter-node-name": ("string", False), "x-perf": ("object", False)}),
    Command("block-stream", _block_stream, {
        "job-id": ("string", False), "device": ("string", True), "base": ("string", False),
        "base-node": ("string", False), "backing-file": ("string", False),
        "bottom": ("string", False), "speed": ("int", False), "on-error": ("string", False),
        "filter-node-name": ("string", False), **_JOB_OPTS}),
    Command("block-commit", _block_commit, {
        "job-id": ("string", False), "device": ("string", True),
        "base-node": ("string", False), "base": ("string", False),
        "top-node": ("string", False), "top": ("string", False),
        "backing-file": ("string", False), "speed": ("int", False),
        "on-error": ("string", False), "filter-node-name": ("string", False),
        **_JOB_OPTS}),
    Command("blockdev-snapshot-sync", _snapshot_sync, {
        "device": ("string", False), "node-name": ("string", False),
        "snapshot-file": ("string", True), "snapshot-node-name": ("string", False),
        "format": ("string", False), "mode": ("string", False)}),
    Command("query-block-jobs", _query_block_jobs),
    Command("query-jobs", _query_jobs),
    Command("block-job-set-speed", _set_speed, {**_DEVICE, "speed": ("int", True)}),
    Command("block-job-cancel", _block_job("cancel"), {**_DEVICE, "force": ("bool", False)}),
    Command("block-job-pause", _block_job("pause"), _DEVICE),
    Command("block-job-resume", _block_job("resume"), _DEVICE),
    Command("block-job-complete", _block_job("complete"), _DEVICE),
    Command("block-job-finalize", _block_job("finalize"), _ID),
    Command("block-job-dismiss", _block_job("dismiss"), _ID),
    *(Command(f"job-{verb}", _job(verb), _ID)
      for verb in ("pause", "resume", "cancel", "complete", "finalize", "dismiss")),
]

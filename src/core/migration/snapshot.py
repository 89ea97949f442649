"""VM snapshots in qcow2 images: ``savevm``, ``loadvm``, ``delvm``, ``info snapshots``.

As QEMU: every writable disk gets an internal snapshot of that name; the
first disk that can hold one also holds the VM state (harts, devices, clock,
RAM) past its disk data (``vmforge_qcow2.vmstate``).  ``loadvm`` reads and
checks the whole VM state before it changes anything: a snapshot of a machine
of another configuration, or a corrupt one, is refused and the running guest
is untouched; then the disks are reverted, RAM and state loaded, and the guest
clock continues from the saved time.  Call these on the machine's thread with
its CPUs not running (the monitor), or before the machine runs (``-loadvm``).

The VM state: ``VMFGSNAP``, a format version, the length of the encoded
machine state (:func:`~vmforge.migration.state.encode_state`), the state, then
the RAM section (:func:`~vmforge.migration.ram.save_ram`).
"""

from __future__ import annotations

import struct
import time
from typing import Any

from vmforge.errors import VmforgeError
from vmforge.migration.ram import check_ram, load_ram, save_ram
from vmforge.migration.record import StateError
from vmforge.migration.state import (
    all_devices,
    apply_state,
    check_state,
    decode_state,
    drain,
    encode_state,
    machine_state,
    pause_clock,
)

__all__ = ["SnapshotError", "delvm", "info_snapshots", "loadvm", "savevm", "split_vm_state"]

_HEAD = struct.Struct("<8sIQ")     # magic, format version, state length
_MAGIC = b"VMFGSNAP"
FORMAT_VERSION = 1


class SnapshotError(VmforgeError):
    """A snapshot operation was refused (QEMU's words where it has them)."""


def _drives(machine: Any) -> list[tuple[str, Any]]:
    """``(name, BlockBackend)`` of every writable disk of ``machine``, in device order."""
    out = []
    seen: set[int] = set()
    for dev in all_devices(machine):
        backend = getattr(dev, "backend", None)
        if backend is None or not hasattr(backend, "top") or id(backend) in seen:
            continue
        seen.add(id(backend))
        if not backend.readonly and not getattr(dev, "read_only", False):
            out.append((_drive_name(machine, dev, backend), backend))
    return out


def _drive_name(machine: Any, dev: Any, backend: Any) -> str:
    """The ``-drive`` id of a disk (QEMU's device name in its messages), else its file."""
    for spec in getattr(machine.config, "drives", []):
        if spec.id and spec.file in (getattr(dev, "drive", None), backend.filename):
            return str(spec.id)
    return str(backend.filename)


def _snapshot_drives(machine: Any, listing: bool = False) -> list[tuple[str, Any]]:
    """The writable disks, if all of them can take a snapshot (and, unless only
    ``listing``, none is owned by a block job)."""
    drives = _drives(machine)
    if not drives:
        raise SnapshotError("No block device can accept snapshots")
    for name, backend in drives:
        if not callable(getattr(backend.top, "save_vm_snapshot", None)):
            raise SnapshotError(f"Device '{name}' is writable but does not support snapshots")
        if not listing and getattr(backend, "job", None) is not None:   # a job owns it
            from vmforge.block.jobs.job import check_free

            check_free(backend, name)
    return drives


def _find(backend: Any, key: str) -> Any:
    for s in backend.top.snapshots():
        if s.id == key:
            return s
    for s in backend.top.snapshots():
        if s.name == key:
            return s
    return None


def savevm(machine: Any, name: str | None = None) -> Any:
    """Snapshot the machine: VM state into the first disk, every writable disk's data
    as an internal snapshot called ``name`` (QEMU's ``vm-YYYYMMDDHHMMSS`` when none;
    a snapshot of that name is replaced).  The snapshot's ``SnapshotInfo``."""
    drives = _snapshot_drives(machine)
    if not name:
        name = time.strftime("vm-%Y%m%d%H%M%S")
    pause_clock(machine)                 # QEMU's vm_stop: time stands still, I/O drained
    state = machine_state(machine)
    for _n, backend in drives:
        backend.flush()
    payload = encode_state(state)
    chunks: list[bytes | memoryview] = [_HEAD.pack(_MAGIC, FORMAT_VERSION, len(payload)),
                                        payload, *save_ram(machine)]
    clock_ns = state["clock_ns"]
    info = drives[0][1].top.save_vm_snapshot(name, chunks, clock_ns)
    for _n, backend in drives[1:]:
        old = _find(backend, name)
        if old is not None and old.name == name:
            backend.top.delete_snapshot(old.id)
        backend.top.create_snapshot(name, 0, clock_ns)
    return info


def split_vm_state(blob: bytes | memoryview) -> tuple[dict[str, Any], memoryview]:
    """(machine state, RAM section) of a snapshot's VM state; ``StateError`` when it
    is not one, of another format version, truncated or corrupt."""
    mv = memoryview(blob).cast("B")
    if len(mv) < _HEAD.size:
        raise StateError("VM state: truncated")
    magic, version, length = _HEAD.unpack_from(mv, 0)
    if magic != _MAGIC:
        raise StateError("VM state: not a vmforge VM state")
    if version != FORMAT_VERSION:
        raise StateError(f"VM state: format version {version}, this vmforge reads "
                         f"{FORMAT_VERSION}")
    if _HEAD.size + length > len(mv):
        raise StateError("VM state: truncated")
    state = decode_state(mv[_HEAD.size:_HEAD.size + length])
    return state, mv[_HEAD.size + length:]


def loadvm(machine: Any, name: str) -> None:
    """Make the machine what snapshot ``name`` (id or name) holds.  Everything is
    read and checked first: a refusal leaves the machine and its disks as they were."""
    drives = _snapshot_drives(machine)
    for _n, backend in drives:
        if _find(backend, name) is None:
            raise SnapshotError(f"Snapshot '{name}' does not exist in one or more devices")
    blob = drives[0][1].top.read_vm_state(name)
    state, ram = split_vm_state(blob)
    try:
        check_state(machine, state)
        check_ram(machine, ram)
    except StateError as exc:
        raise StateError(f"snapshot '{name}' cannot be loaded: {exc}") from None
    pause_clock(machine)
    drain(machine)
    try:
        for _n, backend in drives:
            backend.top.revert_snapshot(_find(backend, name).id)
        load_ram(machine, ram)
        apply_state(machine, state)
    except VmforgeError as exc:     # past the point of no return: as QEMU, stay stopped
        machine.pause()
        raise SnapshotError(f"loading snapshot '{name}' failed: {exc}; the VM is "
                            "stopped") from exc


def delvm(machine: Any, name: str) -> None:
    """Delete snapshot ``name`` from every disk that has it."""
    for drive, backend in _snapshot_drives(machine):
        snap = _find(backend, name)
        if snap is None:
            continue
        try:
            backend.top.delete_snapshot(snap.id)
        except VmforgeError as exc:
            raise SnapshotError(f"Could not delete snapshot '{name}' on '{drive}': "
                                f"{exc}") from None


def info_snapshots(machine: Any) -> str:
    """QEMU's ``info snapshots``: the snapshots every disk has, ID shown as ``--``."""
    import dataclasses

    from vmforge.cli.img_report import snapshot_table

    drives = _snapshot_drives(machine, listing=True)
    first = drives[0][1].top.snapshots()
    if not any(backend.top.snapshots() for _n, backend in drives):
        return "There is no snapshot available."
    names = [{s.name for s in backend.top.snapshots()} for _n, backend in drives]
    common = [dataclasses.replace(s, id="--") for s in first
              if all(s.name in n for n in names)]
    lines = ["List of snapshots present on all disks:"]
    lines += snapshot_table(common)[1:] if common else ["None"]
    for (drive, backend), _n in zip(drives, names, strict=True):
        partial = [s for s in backend.top.snapshots() if s.name not in {c.name for c in common}]
        if partial:
            lines += ["", f"List of partial (non-loadable) snapshots on '{drive}':"]
            lines += snapshot_table(partial)[1:]
    return "\n".join(lines)

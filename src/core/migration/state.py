"""A whole machine's state as one record: harts, devices, clock (RAM is
:mod:`vmforge.migration.ram`'s).

``machine_state`` gathers every device's and hart's record after draining the
devices' in-flight I/O (QEMU drains before it stops a VM); ``check_state``
refuses a record that does not fit the machine (another configuration, a bad
field) before anything changes; ``apply_state`` checks, then applies: the
guest clock continues from the saved time (so timers keep their relative
deadlines), the devices take their records, the interrupt controller last
among them, then the harts.  Load RAM before ``apply_state``: virtqueues are
re-walked in guest memory.

``encode_state`` / ``decode_state``: the record as bytes with a magic, a format
version and a CRC-32, so a truncated or corrupt stream is refused.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from vmforge.migration import codec
from vmforge.migration.ram import ram_layout
from vmforge.migration.record import StateError, check_header, get_int, header

__all__ = ["STATE_VERSION", "all_devices", "apply_state", "check_state", "config_fingerprint",
           "decode_state", "describe_difference", "drain", "encode_state", "machine_state",
           "pause_clock"]

STATE_VERSION = 1
_NAME = "vmforge-machine"
_MAGIC = b"VMFGSTA1"
_HEAD = struct.Struct("<8sIQI")       # magic, format version, payload length, crc32
FORMAT_VERSION = 1


# -- the configuration -----------------------------------------------------------------

def _device_key(index: int, dev: Any) -> str:
    base = getattr(dev, "base", None)
    return f"{dev.name}@{base:#x}" if base is not None else f"{dev.name}#{index}"


def _device_kind(dev: Any) -> str:
    """A device's class, and the virtio device behind a transport."""
    inner = getattr(dev, "dev", None)
    kind = type(dev).__name__
    return f"{kind}({type(inner).__name__})" if inner is not None else kind


def config_fingerprint(machine: Any) -> dict[str, Any]:
    """What must be the same on both sides: the board, the CPUs, the RAM map and
    the devices (with what sits behind each virtio transport)."""
    icount = machine.config.icount
    return {
        "machine": machine.name,
        "cpus": len(machine.cpus),
        "ram": ram_layout(machine),
        "icount": None if icount is None else [icount.shift, icount.sleep],
        "devices": [[_device_key(i, d), _device_kind(d)] for i, d in enumerate(machine.devices)],
    }


def describe_difference(saved: dict[str, Any], mine: dict[str, Any]) -> str:
    """How a saved :func:`config_fingerprint` differs from this machine's, in words."""
    if saved.get("machine") != mine["machine"]:
        return f"it is of machine {saved.get('machine')!r}, this one is {mine['machine']!r}"
    if saved.get("cpus") != mine["cpus"]:
        return f"it has {saved.get('cpus')} CPUs, this machine {mine['cpus']}"
    if saved.get("ram") != mine["ram"]:
        def mib(layout: Any) -> str:
            try:
                return " + ".join(f"{size >> 20} MiB at {base:#x}" for _n, base, size in layout)
            except (TypeError, ValueError):
                return repr(layout)
        return f"its RAM is {mib(saved.get('ram'))}, this machine has {mib(mine['ram'])}"
    if saved.get("icount") != mine["icount"]:
        return "it was made with other -icount settings"
    listed = saved.get("devices")
    theirs = [tuple(d) for d in (listed if isinstance(listed, list) else [])
              if isinstance(d, list) and len(d) == 2]
    ours = [tuple(d) for d in mine["devices"]]
    extra = [d for d in theirs if d not in ours]
    missing = [d for d in ours if d not in theirs]
    parts = []
    if extra:
        parts.append("it has " + ", ".join(f"{k} {kind}" for k, kind in extra))
    if missing:
        parts.append("this machine has " + ", ".join(f"{k} {kind}" for k, kind in missing))
    return "; ".join(parts) or "its devices differ"


_describe_difference = describe_difference      # (the name live.py imported first)


# -- saving ---------------------------------------------------------------------------------

def drain(machine: Any, timeout: float = 10.0) -> None:
    """Finish the devices' in-flight I/O (the machine's thread, CPUs not running),
    after the queue kicks the guest made that are still on their way (KVM's
    ioeventfds: :meth:`~vmforge.accel.kvm.machine.KvmMachine.flush_notifies`)."""
    flush = getattr(machine, "flush_notifies", None)
    if callable(flush):
        flush()
    for dev in _virtio_devices(machine):
        if not dev.drain(timeout):
            raise StateError(f"{dev.name}: I/O requests did not finish in {timeout} s")


def all_devices(machine: Any) -> list[Any]:
    """Every device of ``machine``: its own, the device behind each transport
    (``.dev``), the functions on a PCI host's bus and the devices behind them, and
    those on the buses behind bridges (a pcie-root-port's slot)."""
    out: list[Any] = []
    seen: set[int] = set()

    def walk(dev: Any) -> None:
        if id(dev) in seen:
            return
        seen.add(id(dev))
        out.append(dev)
        inner = getattr(dev, "dev", None)
        if inner is not None:
            out.append(inner)
        # a host's bus, and the secondary bus of each bridge on it (root ports)
        for bus in (getattr(dev, "bus", None), getattr(dev, "secondary", None)):
            for fn in list(getattr(bus, "devices", {}).values()):
                walk(fn)

    for dev in machine.devices:
        walk(dev)
    return out


def _virtio_devices(machine: Any) -> list[Any]:
    return [d for d in all_devices(machine) if callable(getattr(d, "drain", None))]


def pause_clock(machine: Any) -> None:
    """Stop the guest clock as a paused machine does (the run loop starts it again,
    telling the CPUs their new origin)."""
    machine.clock.pause()
    machine.clock_paused()


def machine_state(machine: Any) -> dict[str, Any]:
    """Every hart's and device's record, the clock and the configuration, as plain
    values.  Call it on the machine's thread with the CPUs not running (the
    monitor, a paused machine): guest time is stopped (:func:`pause_clock`; the
    run loop starts it again) and the devices are drained first."""
    park = getattr(machine, "park_cpus", None)     # KVM: the vCPU threads end first
    if callable(park):
        park()
    pause_clock(machine)
    drain(machine)
    board = getattr(machine, "save_board_state", None)   # KVM: vCPUs parked, in-kernel devices
    board_rec = board() if callable(board) else None
    cluster = getattr(machine, "cluster", None)
    devices = {}
    for i, dev in enumerate(machine.devices):
        saver = getattr(dev, "save_state", None)
        if saver is None:
            raise StateError(f"device {dev.name} ({type(dev).__name__}) cannot save its "
                             "state: the machine cannot be saved")
        devices[_device_key(i, dev)] = saver()
    for cpu in machine.cpus:
        if not callable(getattr(cpu, "save_state", None)):
            raise StateError(f"CPU {type(cpu).__name__} cannot save its state: the machine "
                             "cannot be saved")
    rec = header(_NAME, STATE_VERSION)
    rec.update(config=config_fingerprint(machine), clock_ns=machine.clock.now_ns(),
               harts=[hart.save_state() for hart in machine.cpus],
               halted=[bool(h) for h in getattr(cluster, "halted", [False] * len(machine.cpus))],
               devices=devices)
    if board_rec is not None:
        rec["board"] = board_rec
    return rec


# -- loading --------------------------------------------------------------------------------

def _ordered(machine: Any) -> list[tuple[str, Any]]:
    """Devices in load order: interrupt controllers last (they take the input
    levels the others drove while loading, and drive the harts)."""
    keyed = [(_device_key(i, d), d) for i, d in enumerate(machine.devices)]
    return ([kd for kd in keyed if not hasattr(kd[1], "set_irq")]
            + [kd for kd in keyed if hasattr(kd[1], "set_irq")])


def check_state(machine: Any, state: Any) -> None:
    """:class:`StateError` unless ``state`` fits ``machine``; nothing is changed."""
    rec = check_header(state, _NAME, STATE_VERSION)
    mine = config_fingerprint(machine)
    saved = rec.get("config")
    if saved != mine:
        saved = saved if isinstance(saved, dict) else {}
        raise StateError("the saved machine does not match this one: "
                         + describe_difference(saved, mine))
    get_int(rec, "clock_ns", 0, (1 << 63) - 1, "machine state")
    harts, halted = rec.get("harts"), rec.get("halted")
    if (not isinstance(harts, list) or not isinstance(halted, list)
            or len(harts) != len(machine.cpus) or len(halted) != len(machine.cpus)
            or any(type(h) is not bool for h in halted)):
        raise StateError(f"machine state: harts and halted must list {len(machine.cpus)} CPUs")
    for hart, hrec in zip(machine.cpus, harts, strict=True):
        if not callable(getattr(hart, "check_state", None)):
            raise StateError(f"CPU {type(hart).__name__} cannot save or load its state")
        hart.check_state(hrec)
    devices = rec.get("devices")
    keys = [k for k, _d in _ordered(machine)]
    if not isinstance(devices, dict) or sorted(devices) != sorted(keys):
        raise StateError("machine state: the device records are not this machine's devices")
    for key, dev in _ordered(machine):
        _check_device(key, dev, devices[key])
    if callable(getattr(machine, "check_board_state", None)):
        machine.check_board_state(rec.get("board"))


def _check_device(key: str, dev: Any, record: Any) -> None:
    from vmforge.pci import PciStateError

    checker = getattr(dev, "check_state", None)
    if checker is None:
        raise StateError(f"device {key} cannot check a saved record")
    try:
        checker(record)
    except PciStateError as exc:
        raise StateError(f"{key}: {exc}") from None


def apply_state(machine: Any, state: dict[str, Any]) -> None:
    """Check ``state``, then make ``machine`` what it describes.  The machine's CPUs
    are not running (the machine's thread, or before it starts); its RAM holds the
    saved RAM already.  The guest clock is left paused at the saved time: the
    run loop starts it and re-times the CPUs."""
    check_state(machine, state)
    if callable(getattr(machine, "park_cpus", None)):
        machine.park_cpus()
    drain(machine)
    pause_clock(machine)
    machine.clock.advance(state["clock_ns"] - machine.clock.now_ns())
    try:
        for key, dev in _ordered(machine):
            dev.load_state(state["devices"][key])
        if callable(getattr(machine, "load_board_state", None)):
            machine.load_board_state(state["board"])
        for hart, hrec in zip(machine.cpus, state["harts"], strict=True):
            hart.load_state(hrec)
    except Exception as exc:       # a ring that no longer walks in the loaded RAM...
        raise StateError(f"loading the machine state failed half-way ({exc}); "
                         "the machine cannot go on") from exc
    cluster = getattr(machine, "cluster", None)
    if cluster is not None:
        cluster.halted = list(state["halted"])


# -- bytes ------------------------------------------------------------------------------------

def encode_state(state: dict[str, Any]) -> bytes:
    """``state`` as bytes: magic, format version, length, CRC-32, then the values."""
    payload = codec.encode(state)
    return _HEAD.pack(_MAGIC, FORMAT_VERSION, len(payload), zlib.crc32(payload)) + payload


def decode_state(data: bytes | memoryview) -> dict[str, Any]:
    """The state :func:`encode_state` wrote; :class:`StateError` when the bytes are
    not a vmforge state, of another format version, truncated or corrupt."""
    mv = memoryview(data).cast("B")
    if len(mv) < _HEAD.size:
        raise StateError("machine state: truncated (no header)")
    magic, version, length, crc = _HEAD.unpack_from(mv, 0)
    if magic != _MAGIC:
        raise StateError("machine state: not a vmforge machine state")
    if version != FORMAT_VERSION:
        raise StateError(f"machine state: format version {version}, this vmforge reads "
                         f"{FORMAT_VERSION}")
    payload = mv[_HEAD.size:]
    if len(payload) != length:
        raise StateError(f"machine state: {len(payload)} bytes, the header says {length} "
                         "(truncated)")
    if zlib.crc32(payload) != crc:
        raise StateError("machine state: checksum mismatch (the data is corrupt)")
    state = codec.decode(payload)
    if not isinstance(state, dict):
        raise StateError("machine state: not a record")
    return state

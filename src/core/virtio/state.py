"""Checking and staging a virtio device's saved record before any of it is applied.

:func:`check_record` refuses a record whose type, name, version, device id,
queue count, sizes, addresses, indices or features do not fit the device;
:func:`restore_queues` then builds every ring and re-walks every in-flight
chain *aside*, returning one "apply" function per queue, so a record that
fails half-way (a ring outside this machine's RAM, a chain that no longer
walks) leaves the device exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable

from vmforge._fast.vring import RingError, VRing
from vmforge.migration.record import StateError
from vmforge.migration.record import get_bool as _bool
from vmforge.migration.record import get_int as _int
from vmforge.virtio import spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from vmforge.virtio.device import VirtioDevice
    from vmforge.virtio.queue import Virtqueue

__all__ = ["StateError", "check_record", "restore_queues"]

_U64 = (1 << 64) - 1


def check_record(dev: VirtioDevice, record: Any, version: int) -> None:
    """Raise :class:`StateError` unless ``record`` is a valid record of ``dev``."""
    where = f"{dev.name} state"
    if not isinstance(record, dict) or record.get("type") != "virtio-device":
        raise StateError(f"{where}: not a virtio device record")
    if record.get("name") != dev.name:
        raise StateError(f"{where}: record is for {record.get('name')!r}")
    if record.get("version") != version:
        raise StateError(f"{where}: version {record.get('version')!r}, expected {version}")
    _int(record, "device_id", dev.device_id, dev.device_id, where)
    legacy = _bool(record, "legacy", where)
    _int(record, "status", 0, 0xFF, where)
    features = _int(record, "driver_features", 0, _U64, where)
    _int(record, "config_generation", 0, 0xFFFFFFFF, where)
    _bool(record, "broken", where)
    saved_legacy = dev.legacy
    try:
        dev.legacy = legacy
        offered = dev.device_features()
    finally:
        dev.legacy = saved_legacy
    if features & ~offered:
        raise StateError(f"{where}: driver features {features:#x} include bits the device "
                         f"does not offer ({offered:#x})")
    queues = record.get("queues")
    if not isinstance(queues, list) or len(queues) != len(dev.queues):
        raise StateError(f"{where}: {len(dev.queues)} queues expected")
    if not isinstance(record.get("device"), dict):
        raise StateError(f"{where}: device state is not a dict")
    packed = bool(features >> spec.VIRTIO_F_RING_PACKED & 1)
    for q, qrec in zip(dev.queues, queues, strict=True):
        _check_queue(q, qrec, packed, f"{where} queue {q.index}")


def _check_queue(q: Virtqueue, rec: Any, packed: bool, where: str) -> None:
    if not isinstance(rec, dict):
        raise StateError(f"{where}: not a dict")
    size = _int(rec, "size", 1, q.max_size, where)
    ready = _bool(rec, "ready", where)
    for key in ("desc", "driver", "device"):
        _int(rec, key, 0, _U64, where)
    _int(rec, "pfn", 0, 0xFFFFFFFF, where)
    _int(rec, "align", 0, 1 << 31, where)
    ring = rec.get("ring")
    if ring is None:
        return
    if not ready or not isinstance(ring, dict):
        raise StateError(f"{where}: ring state for a queue that is not ready")
    for key in ("last_avail", "used_idx", "published", "signalled_used"):
        _int(ring, key, 0, 0xFFFF if not packed else size - 1, where)
    for key in ("signalled_valid", "avail_wrap", "used_wrap", "notify_enabled"):
        _bool(ring, key, where)
    inflight = ring.get("inflight")
    if not isinstance(inflight, list) or len(inflight) > size:
        raise StateError(f"{where}: in-flight list missing or longer than the queue")
    heads = set()
    for item in inflight:
        if (not isinstance(item, list) or len(item) != 4
                or any(type(v) is not int for v in item[:3]) or type(item[3]) is not bool):
            raise StateError(f"{where}: in-flight entry {item!r} is not [head, slots, pos, wrap]")
        head, slots, pos, _wrap = item
        if not 0 <= head < (65536 if packed else size) or head in heads:
            raise StateError(f"{where}: in-flight head {head} out of range or repeated")
        if not 1 <= slots <= size or not 0 <= pos < (size if packed else 65536):
            raise StateError(f"{where}: in-flight entry {item!r} out of range")
        heads.add(head)


def restore_queues(dev: VirtioDevice, record: dict[str, Any]) -> list[Callable[[Virtqueue], None]]:
    """Build each queue's ring and in-flight chains from a checked record, without
    touching the device; one function per queue applies them."""
    if dev.memory is None and any(q.get("ring") for q in record["queues"]):
        raise StateError(f"{dev.name} state: rings need guest memory (attach first)")
    features = record["driver_features"]
    out: list[Callable[[Virtqueue], None]] = []
    for q, rec in zip(dev.queues, record["queues"], strict=True):
        out.append(_stage_queue(dev, q, rec, features))
    return out


def _stage_queue(dev: VirtioDevice, q: Virtqueue, rec: dict[str, Any],
                 features: int) -> Callable[[Virtqueue], None]:
    where = f"{dev.name} state queue {q.index}"
    ring: VRing | None = None
    chains = {}
    rstate = rec.get("ring")
    if rstate is not None:
        try:
            ring = VRing(dev.memory, rec["size"], rec["desc"], rec["driver"], rec["device"],
                         packed=bool(features >> spec.VIRTIO_F_RING_PACKED & 1),
                         event_idx=bool(features >> spec.VIRTIO_F_EVENT_IDX & 1),
                         indirect=bool(features >> spec.VIRTIO_F_INDIRECT_DESC & 1),
                         max_segments=dev.max_segments)
            for key in ("last_avail", "used_idx", "published", "signalled_used",
                        "signalled_valid", "avail_wrap", "used_wrap", "notify_enabled"):
                setattr(ring, key, rstate[key])
            for head, _slots, pos, wrap in rstate["inflight"]:
                chain = ring.rewalk(head, pos, wrap)
                ring.mark_inflight(head)
                chains[head] = chain
        except (ValueError, RingError) as exc:
            raise StateError(f"{where}: {exc}") from exc

    def apply(queue: Virtqueue) -> None:
        queue.clear()
        for key in ("size", "ready", "desc", "driver", "device", "pfn", "align"):
            setattr(queue, key, rec[key])
        queue.ring = ring
        queue.inflight.update(chains)

    return apply

"""A guest-side virtio driver in Python, to test device back-ends without a guest.

It plays Linux's part over a :class:`~vmforge.memory.GuestMemory`:
``add_sgs`` / ``kick`` / ``get_buf`` on split or packed rings, with indirect
descriptors and event-index notification suppression, and an MMIO driver
that initialises a :class:`~vmforge.virtio.mmio.VirtioMmioTransport` the way
``virtio_mmio.c`` does (modern or legacy).  Raw helpers (``write_desc``,
``publish``, ``set_avail_idx``) write whatever a hostile guest would::

    mem = GuestMemory(); mem.add_ram(0x8000_0000, 1 << 20)
    drv = MmioDriver(VirtioMmioTransport(VirtioRng()), mem)
    q = drv.setup()[0]                       # features, queues, DRIVER_OK
    req = q.add_sgs([], [64])                # one 64-byte device-writable buffer
    q.kick()
    req = q.get_buf()                        # (the request, bytes written) or None
    assert len(req.data()) == 64

Nothing here is fast or meant for production; it is written for clarity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vmforge.virtio import mmio, spec

__all__ = ["DeviceLoop", "GuestAllocator", "MmioDriver", "PackedQueueDriver", "Request",
           "SplitQueueDriver", "need_event"]

F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4
F_AVAIL, F_USED = 1 << 7, 1 << 15


def need_event(event: int, new: int, old: int) -> bool:
    """virtio's ``vring_need_event``: did ``old -> new`` cross ``event``?"""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


class GuestAllocator:
    """A bump allocator over ``[base, base+size)`` of guest memory."""

    def __init__(self, base: int, size: int) -> None:
        self.base, self.end, self.next = base, base + size, base

    def alloc(self, size: int, align: int = 16) -> int:
        addr = (self.next + align - 1) // align * align
        if addr + size > self.end:
            raise MemoryError(f"guest allocator out of space ({size} bytes)")
        self.next = addr + size
        return addr


@dataclass
class Request:
    """One buffer the driver made available: ``out`` readable and ``in_`` writable
    segments as ``(address, length)``; ``written`` once the device used it."""

    head: int
    token: Any
    out: list[tuple[int, int]]
    in_: list[tuple[int, int]]
    slots: int = 1
    written: int | None = None
    memory: Any = field(default=None, repr=False)

    def data(self) -> bytes:
        """The bytes the device wrote (the first ``written`` of the writable part)."""
        left = self.written or 0
        out = bytearray()
        for addr, length in self.in_:
            take = min(left, length)
            if take <= 0:
                break
            out += self.memory.read(addr, take)
            left -= take
        return bytes(out)


Segment = bytes | int | tuple[int, int]


class _QueueDriver:
    """What split and packed drivers share: buffers, requests, the notify hook."""

    def __init__(self, memory: Any, alloc: GuestAllocator, size: int, *, event_idx: bool,
                 indirect: bool, notify: Callable[[], None] | None) -> None:
        self.memory = memory
        self.alloc = alloc
        self.size = size
        self.event_idx = event_idx
        self.indirect = indirect
        self.notify = notify
        self.pending: dict[int, Request] = {}
        self.kicks = 0

    def _segments(self, out: Sequence[Segment], in_: Sequence[Segment]) -> tuple[
            list[tuple[int, int]], list[tuple[int, int]]]:
        """Guest buffers for ``out`` (bytes to copy in, or ``(addr, len)``) and ``in_``
        (a length, or ``(addr, len)``)."""
        o: list[tuple[int, int]] = []
        for item in out:
            if isinstance(item, tuple):
                o.append(item)
            else:
                data = bytes(item)  # type: ignore[arg-type]
                addr = self.alloc.alloc(max(len(data), 1), 8)
                self.memory.write(addr, data)
                o.append((addr, len(data)))
        i: list[tuple[int, int]] = []
        for item in in_:
            if isinstance(item, tuple):
                i.append(item)
            else:
                length = int(item)  # type: ignore[arg-type]
                i.append((self.alloc.alloc(max(length, 1), 8), length))
        return o, i

    def kick(self) -> bool:
        """Notify the device if it wants to hear (True when notified)."""
        if self.kick_prepare() and self.notify is not None:
            self.kicks += 1
            self.notify()
            return True
        return False

    def kick_prepare(self) -> bool:
        raise NotImplementedError

    def drain(self) -> list[Request]:
        """Every used buffer available now."""
        out = []
        while (req := self.get_buf()) is not None:
            out.append(req)
        return out

    def get_buf(self) -> Request | None:
        raise NotImplementedError


class SplitQueueDriver(_QueueDriver):
    """The driver side of a split ring (``legacy_align``: the legacy contiguous layout)."""

    def __init__(self, memory: Any, alloc: GuestAllocator, size: int, *, event_idx: bool = True,
                 indirect: bool = True, notify: Callable[[], None] | None = None,
                 legacy_align: int | None = None) -> None:
        super().__init__(memory, alloc, size, event_idx=event_idx, indirect=indirect,
                         notify=notify)
        if legacy_align:
            total = spec.legacy_ring_layout(0, size, legacy_align)[2] + 6 + 8 * size
            base = alloc.alloc(total, legacy_align)
            self.desc, self.avail, self.used = spec.legacy_ring_layout(base, size, legacy_align)
        else:
            self.desc = alloc.alloc(16 * size, 16)
            self.avail = alloc.alloc(6 + 2 * size, 2)
            self.used = alloc.alloc(6 + 8 * size, 4)
        for addr, n in ((self.desc, 16 * size), (self.avail, 6 + 2 * size),
                        (self.used, 6 + 8 * size)):
            memory.write(addr, bytes(n))
        self.free = list(range(size))
        self.avail_idx = 0
        self.last_used = 0
        self.kicked_idx = 0

    # raw access: what a hostile guest writes
    def write_desc(self, i: int, addr: int, length: int, flags: int = 0, next_: int = 0,
                   table: int | None = None) -> None:
        base = self.desc if table is None else table
        self.memory.write(base + 16 * i, addr.to_bytes(8, "little") + length.to_bytes(4, "little")
                          + flags.to_bytes(2, "little") + next_.to_bytes(2, "little"))

    def publish(self, head: int) -> None:
        """Put ``head`` in the available ring and bump avail.idx."""
        self.memory.write_u16(self.avail + 4 + 2 * (self.avail_idx % self.size), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.memory.write_u16(self.avail + 2, self.avail_idx)

    def set_avail_idx(self, value: int) -> None:
        self.avail_idx = value & 0xFFFF
        self.memory.write_u16(self.avail + 2, self.avail_idx)

    @property
    def used_idx(self) -> int:
        return self.memory.read_u16(self.used + 2)

    def add_sgs(self, out: Sequence[Segment] = (), in_: Sequence[Segment] = (),
                token: Any = None, indirect: bool | None = None) -> Request:
        """Make a buffer available (like ``virtqueue_add_sgs``); indirect when asked
        or when it has more than one segment and the feature is on."""
        o, i = self._segments(out, in_)
        segs = [(a, n, 0) for a, n in o] + [(a, n, F_WRITE) for a, n in i]
        if not segs:
            raise ValueError("a buffer needs at least one segment")
        use_indirect = self.indirect and len(segs) > 1 if indirect is None else indirect
        need = 1 if use_indirect else len(segs)
        if need > len(self.free):
            raise MemoryError("ring full")
        if use_indirect:
            table = self.alloc.alloc(16 * len(segs), 16)
            for k, (a, n, f) in enumerate(segs):
                last = k == len(segs) - 1
                self.write_desc(k, a, n, f | (0 if last else F_NEXT), k + 1 if not last else 0,
                                table=table)
            head = self.free.pop(0)
            self.write_desc(head, table, 16 * len(segs), F_INDIRECT)
            used = [head]
        else:
            used = [self.free.pop(0) for _ in segs]
            for k, (a, n, f) in enumerate(segs):
                last = k == len(segs) - 1
                self.write_desc(used[k], a, n, f | (0 if last else F_NEXT),
                                0 if last else used[k + 1])
            head = used[0]
        req = Request(head, token, o, i, len(used), memory=self.memory)
        req._descs = used  # type: ignore[attr-defined]
        self.pending[head] = req
        self.publish(head)
        return req

    def kick_prepare(self) -> bool:
        old, new = self.kicked_idx, self.avail_idx
        self.kicked_idx = new
        if self.event_idx:
            avail_event = self.memory.read_u16(self.used + 4 + 8 * self.size)
            return need_event(avail_event, new, old)
        return not self.memory.read_u16(self.used) & spec.VIRTQ_USED_F_NO_NOTIFY

    def get_buf(self) -> Request | None:
        if self.last_used == self.used_idx:
            return None
        elem = self.used + 4 + 8 * (self.last_used % self.size)
        head, written = self.memory.read_u32(elem), self.memory.read_u32(elem + 4)
        self.last_used = (self.last_used + 1) & 0xFFFF
        if self.event_idx:  # interrupt me at the next one
            self.memory.write_u16(self.avail + 4 + 2 * self.size, self.last_used)
        req = self.pending.pop(head, None)
        if req is None:
            raise AssertionError(f"device returned head {head} that is not pending")
        self.free.extend(req._descs)  # type: ignore[attr-defined]
        req.written = written
        return req

    def disable_interrupts(self) -> None:
        self.memory.write_u16(self.avail, spec.VIRTQ_AVAIL_F_NO_INTERRUPT)

    def set_used_event(self, value: int) -> None:
        self.memory.write_u16(self.avail + 4 + 2 * self.size, value & 0xFFFF)


class PackedQueueDriver(_QueueDriver):
    """The driver side of a packed ring."""

    def __init__(self, memory: Any, alloc: GuestAllocator, size: int, *, event_idx: bool = True,
                 indirect: bool = True, notify: Callable[[], None] | None = None) -> None:
        super().__init__(memory, alloc, size, event_idx=event_idx, indirect=indirect,
                         notify=notify)
        self.desc = alloc.alloc(16 * size, 16)
        self.driver = alloc.alloc(4, 4)  # driver event suppression (read by the device)
        self.device = alloc.alloc(4, 4)  # device event suppression (written by the device)
        memory.write(self.desc, bytes(16 * size))
        memory.write(self.driver, bytes(4))
        memory.write(self.device, bytes(4))
        self.next_avail = 0
        self.avail_wrap = 1
        self.last_used = 0
        self.used_wrap = 1
        self.num_free = size
        self.free_ids = list(range(size))
        self.kicked = (0, 1)

    def write_desc(self, i: int, addr: int, length: int, id_: int, flags: int,
                   table: int | None = None) -> None:
        base = self.desc if table is None else table
        self.memory.write(base + 16 * i, addr.to_bytes(8, "little") + length.to_bytes(4, "little")
                          + id_.to_bytes(2, "little") + flags.to_bytes(2, "little"))

    def avail_flags(self, wrap: int | None = None) -> int:
        w = self.avail_wrap if wrap is None else wrap
        return (F_AVAIL if w else 0) | (0 if w else F_USED)

    def add_sgs(self, out: Sequence[Segment] = (), in_: Sequence[Segment] = (),
                token: Any = None, indirect: bool | None = None) -> Request:
        o, i = self._segments(out, in_)
        segs = [(a, n, 0) for a, n in o] + [(a, n, F_WRITE) for a, n in i]
        use_indirect = self.indirect and len(segs) > 1 if indirect is None else indirect
        need = 1 if use_indirect else len(segs)
        if need > self.num_free or not self.free_ids:
            raise MemoryError("ring full")
        bid = self.free_ids.pop(0)
        start, wrap = self.next_avail, self.avail_wrap
        if use_indirect:
            table = self.alloc.alloc(16 * len(segs), 16)
            for k, (a, n, f) in enumerate(segs):
                self.write_desc(k, a, n, 0, f, table=table)
            ring = [(table, 16 * len(segs), F_INDIRECT)]
        else:
            ring = list(segs)
        head_flags = 0
        for k, (a, n, f) in enumerate(ring):
            flags = f | (F_NEXT if k < len(ring) - 1 else 0) | self.avail_flags()
            if k == 0:
                head_flags = flags
                self.write_desc(self.next_avail, a, n, bid, flags & ~(F_AVAIL | F_USED)
                                | self.avail_flags(1 - wrap))  # not yet available
            else:
                self.write_desc(self.next_avail, a, n, bid, flags)
            self.next_avail += 1
            if self.next_avail == self.size:
                self.next_avail = 0
                self.avail_wrap ^= 1
        # the head's flags last: the device never sees a partial chain
        self.memory.write_u16(self.desc + 16 * start + 14, head_flags)
        self.num_free -= len(ring)
        req = Request(bid, token, o, i, len(ring), memory=self.memory)
        self.pending[bid] = req
        return req

    def kick_prepare(self) -> bool:
        old_pos, _old_wrap = self.kicked
        self.kicked = (self.next_avail, self.avail_wrap)
        off_wrap = self.memory.read_u16(self.device)
        flags = self.memory.read_u16(self.device + 2) & 3
        if flags == spec.RING_EVENT_FLAGS_DISABLE:
            return False
        if flags != spec.RING_EVENT_FLAGS_DESC:
            return True
        off = off_wrap & 0x7FFF
        if off_wrap >> 15 != self.avail_wrap:
            off -= self.size
        return need_event(off & 0xFFFF, self.next_avail, old_pos)

    def get_buf(self) -> Request | None:
        flags = self.memory.read_u16(self.desc + 16 * self.last_used + 14)
        avail, used = bool(flags & F_AVAIL), bool(flags & F_USED)
        if avail != used or used != bool(self.used_wrap):
            return None
        elem = self.desc + 16 * self.last_used
        written = self.memory.read_u32(elem + 8)
        bid = self.memory.read_u16(elem + 12)
        req = self.pending.pop(bid, None)
        if req is None:
            raise AssertionError(f"device returned buffer id {bid} that is not pending")
        self.last_used += req.slots
        if self.last_used >= self.size:
            self.last_used -= self.size
            self.used_wrap ^= 1
        self.num_free += req.slots
        self.free_ids.append(bid)
        if self.event_idx:
            self.set_used_event(self.last_used, self.used_wrap)
        req.written = written
        return req

    def set_used_event(self, pos: int, wrap: int) -> None:
        self.memory.write_u16(self.driver, pos | (wrap << 15))
        self.memory.write_u16(self.driver + 2, spec.RING_EVENT_FLAGS_DESC)

    def disable_interrupts(self) -> None:
        self.memory.write_u16(self.driver + 2, spec.RING_EVENT_FLAGS_DISABLE)


class DeviceLoop:
    """A stand-in for the machine's ``call_soon`` in tests: callbacks from I/O threads
    queue here and run when the test calls :meth:`run` (on the test's thread)."""

    def __init__(self) -> None:
        import collections
        import threading

        self._q: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            collections.deque())
        self._event = threading.Event()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self._q.append((fn, args))
        self._event.set()

    def run(self) -> int:
        n = 0
        while self._q:
            fn, args = self._q.popleft()
            fn(*args)
            n += 1
        return n

    def run_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Run callbacks as they arrive until ``predicate()`` (False at ``timeout``)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            self.run()
            if predicate():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._event.wait(min(left, 0.05))
            self._event.clear()


class MmioDriver:
    """Initialises a virtio-mmio transport like Linux's ``virtio_mmio`` driver."""

    def __init__(self, transport: mmio.VirtioMmioTransport, memory: Any,
                 alloc: GuestAllocator | None = None, *, call_soon: Callable[..., Any] | None
                 = None) -> None:
        self.t = transport
        self.memory = memory
        if alloc is None:
            region = memory.regions[0]
            alloc = GuestAllocator(region.base, region.size)
        self.alloc = alloc
        if transport.dev is not None and transport.dev.memory is None:
            transport.dev.attach(memory, call_soon)
        self.queues: list[Any] = []
        self.features = 0

    def rd(self, offset: int) -> int:
        return self.t.read(offset, 4)

    def wr(self, offset: int, value: int) -> None:
        self.t.write(offset, 4, value)

    @property
    def legacy(self) -> bool:
        return self.rd(mmio.VERSION) == 1

    def device_features(self) -> int:
        self.wr(mmio.DEVICE_FEATURES_SEL, 0)
        low = self.rd(mmio.DEVICE_FEATURES)
        if self.legacy:
            return low
        self.wr(mmio.DEVICE_FEATURES_SEL, 1)
        return low | self.rd(mmio.DEVICE_FEATURES) << 32

    def negotiate(self, accept: int | None = None) -> bool:
        """Reset, ACKNOWLEDGE, DRIVER, features (all offered & ``accept``), FEATURES_OK;
        True when the device kept FEATURES_OK."""
        self.wr(mmio.STATUS, 0)
        self.wr(mmio.STATUS, spec.STATUS_ACKNOWLEDGE)
        self.wr(mmio.STATUS, spec.STATUS_ACKNOWLEDGE | spec.STATUS_DRIVER)
        offered = self.device_features()
        self.features = offered if accept is None else offered & accept
        self.write_features(self.features)
        if self.legacy:
            return True
        self.wr(mmio.STATUS, spec.STATUS_ACKNOWLEDGE | spec.STATUS_DRIVER
                | spec.STATUS_FEATURES_OK)
        return bool(self.rd(mmio.STATUS) & spec.STATUS_FEATURES_OK)

    def write_features(self, value: int) -> None:
        self.wr(mmio.DRIVER_FEATURES_SEL, 0)
        self.wr(mmio.DRIVER_FEATURES, value & 0xFFFFFFFF)
        if not self.legacy:
            self.wr(mmio.DRIVER_FEATURES_SEL, 1)
            self.wr(mmio.DRIVER_FEATURES, value >> 32 & 0xFFFFFFFF)

    def setup_queue(self, index: int, size: int | None = None) -> Any:
        """Allocate and configure queue ``index`` (split or packed as negotiated)."""
        self.wr(mmio.QUEUE_SEL, index)
        size = size or self.rd(mmio.QUEUE_NUM_MAX)
        kw: dict[str, Any] = {"event_idx": bool(self.features >> spec.VIRTIO_F_EVENT_IDX & 1),
              "indirect": bool(self.features >> spec.VIRTIO_F_INDIRECT_DESC & 1),
              "notify": lambda: self.wr(mmio.QUEUE_NOTIFY, index)}
        self.wr(mmio.QUEUE_NUM, size)
        if self.legacy:
            self.wr(mmio.LEGACY_GUEST_PAGE_SIZE, 4096)
            q: Any = SplitQueueDriver(self.memory, self.alloc, size, legacy_align=4096, **kw)
            self.wr(mmio.LEGACY_QUEUE_ALIGN, 4096)
            self.wr(mmio.LEGACY_QUEUE_PFN, q.desc // 4096)
            return q
        if self.features >> spec.VIRTIO_F_RING_PACKED & 1:
            q = PackedQueueDriver(self.memory, self.alloc, size, **kw)
            areas = (q.desc, q.driver, q.device)
        else:
            q = SplitQueueDriver(self.memory, self.alloc, size, **kw)
            areas = (q.desc, q.avail, q.used)
        for (lo, hi), addr in zip(((mmio.QUEUE_DESC_LOW, mmio.QUEUE_DESC_HIGH),
                                   (mmio.QUEUE_DRIVER_LOW, mmio.QUEUE_DRIVER_HIGH),
                                   (mmio.QUEUE_DEVICE_LOW, mmio.QUEUE_DEVICE_HIGH)), areas,
                                  strict=True):
            self.wr(lo, addr & 0xFFFFFFFF)
            self.wr(hi, addr >> 32)
        self.wr(mmio.QUEUE_READY, 1)
        return q

    def setup(self, accept: int | None = None, nqueues: int | None = None,
              size: int | None = None) -> list[Any]:
        """The whole initialisation; returns the queue drivers."""
        if not self.negotiate(accept):
            raise RuntimeError("device refused FEATURES_OK")
        count = nqueues if nqueues is not None else len(self.t.queues)
        self.queues = [self.setup_queue(i, size) for i in range(count)]
        self.driver_ok()
        return self.queues

    def driver_ok(self) -> None:
        status = self.rd(mmio.STATUS)
        self.wr(mmio.STATUS, status | spec.STATUS_DRIVER_OK)

    @property
    def status(self) -> int:
        return self.rd(mmio.STATUS)

    def ack_interrupts(self) -> int:
        """Read and acknowledge InterruptStatus (what the ISR does)."""
        pending = self.rd(mmio.INTERRUPT_STATUS)
        self.wr(mmio.INTERRUPT_ACK, pending)
        return pending

    def config(self, offset: int, size: int) -> int:
        return self.t.read(mmio.CONFIG + offset, size)

    def config_bytes(self, offset: int, length: int) -> bytes:
        return bytes(self.t.read(mmio.CONFIG + offset + i, 1) for i in range(length))

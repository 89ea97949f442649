"""The virtio-mmio transport (virtio 1.2, section 4.2), register by register.

A :class:`VirtioMmioTransport` fills a 0x1000-byte slot: registers up to 0x100,
the device's configuration space from 0x100.  With no back-end it is an *empty
slot*: MagicValue, Version and VendorID answer, DeviceID reads 0 (the spec's
"placeholder" value, so no driver claims it), every other register reads 0
and writes are dropped, which is what QEMU answers for its unused
``virtio_mmio@1000x000`` slots.

With a back-end (:class:`VirtioMmioBackend`) the transport keeps the modern
(Version 2) register file: feature words, per-queue size/ready/addresses,
interrupt status and acknowledge, device status with reset, the configuration
generation, QueueReset, and forwards config-space accesses and queue
notifications to the back-end.  Virtqueue processing itself belongs to the
back-ends (later steps).

Differences from QEMU 7.2: QEMU's default ``force-legacy=on`` makes an empty
slot read Version 1; vmforge implements only the modern transport and answers
2 unless ``legacy=on`` is asked for (an empty slot only).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from vmforge.device import Device, Prop
from vmforge.fdt import DeviceTree, FdtNode, FdtPlacement

__all__ = [
    "QueueState",
    "VirtioMmioBackend",
    "VirtioMmioTransport",
]

log = logging.getLogger("vmforge.virtio.mmio")

# -- register offsets (virtio 1.2 section 4.2.2; legacy ones from 4.2.4) ----------------
MAGIC_VALUE = 0x000
VERSION = 0x004
DEVICE_ID = 0x008
VENDOR_ID = 0x00C
DEVICE_FEATURES = 0x010
DEVICE_FEATURES_SEL = 0x014
DRIVER_FEATURES = 0x020
DRIVER_FEATURES_SEL = 0x024
LEGACY_GUEST_PAGE_SIZE = 0x028
QUEUE_SEL = 0x030
QUEUE_NUM_MAX = 0x034
QUEUE_NUM = 0x038
LEGACY_QUEUE_ALIGN = 0x03C
LEGACY_QUEUE_PFN = 0x040
QUEUE_READY = 0x044
QUEUE_NOTIFY = 0x050
INTERRUPT_STATUS = 0x060
INTERRUPT_ACK = 0x064
STATUS = 0x070
QUEUE_DESC_LOW = 0x080
QUEUE_DESC_HIGH = 0x084
QUEUE_DRIVER_LOW = 0x090  # the available ring
QUEUE_DRIVER_HIGH = 0x094
QUEUE_DEVICE_LOW = 0x0A0  # the used ring
QUEUE_DEVICE_HIGH = 0x0A4
SHM_SEL = 0x0AC
SHM_LEN_LOW = 0x0B0
SHM_LEN_HIGH = 0x0B4
SHM_BASE_LOW = 0x0B8
SHM_BASE_HIGH = 0x0BC
QUEUE_RESET = 0x0C0
CONFIG_GENERATION = 0x0FC
CONFIG = 0x100

# -- values -----------------------------------------------------------------------------------
MAGIC = 0x74726976  # "virt", little-endian
VERSION_LEGACY = 1
VERSION_MODERN = 2
VENDOR_QEMU = 0x554D4551  # "QEMU", what QEMU's transport reports
INT_VRING = 1 << 0  # InterruptStatus: a used buffer was published
INT_CONFIG = 1 << 1  # InterruptStatus: the configuration changed

# device status bits (virtio 1.2 section 2.1)
STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_DEVICE_NEEDS_RESET = 0x40
STATUS_FAILED = 0x80

#: bytes of a slot (registers, then config space), as the device tree's ``reg`` says
WINDOW_SIZE = 0x1000

_U32 = 0xFFFFFFFF


@runtime_checkable
class VirtioMmioBackend(Protocol):
    """What a virtio device offers the transport (grows with the back-ends)."""

    device_id: int

    def device_features(self) -> int:
        """The 64-bit (or wider) device feature bits."""
        ...

    def queue_max_sizes(self) -> list[int]:
        """QueueNumMax of each queue (its length is the number of queues)."""
        ...

    def config_read(self, offset: int, size: int) -> int: ...

    def config_write(self, offset: int, size: int, value: int) -> None: ...

    def queue_notify(self, index: int) -> None:
        """The driver notified queue ``index``."""
        ...

    def device_reset(self) -> None:
        """The driver wrote 0 to Status: drop all device state."""
        ...


@dataclass
class QueueState:
    """One virtqueue as the driver configured it through the transport."""

    max_size: int
    size: int = 0
    ready: bool = False
    desc: int = 0
    driver: int = 0
    device: int = 0

    def clear(self) -> None:
        self.size = 0
        self.ready = False
        self.desc = self.driver = self.device = 0


def _set_half(value: int, half: int, word: int) -> int:
    shift = 32 * half
    return (value & ~(_U32 << shift)) | ((word & _U32) << shift)


class VirtioMmioTransport(Device):
    """A virtio-mmio slot; an empty one when ``backend`` is None."""

    name: ClassVar[str] = "virtio-mmio"
    mmio_size: ClassVar[int] = WINDOW_SIZE
    valid_sizes: ClassVar[tuple[int, int]] = (1, 4)
    impl_sizes: ClassVar[tuple[int, int]] = (1, 4)

    legacy = Prop(bool, False, "empty slot answers Version 1 (QEMU's force-legacy)")
    vendor_id = Prop(int, VENDOR_QEMU, "VendorID register")

    def __init__(self, backend: VirtioMmioBackend | None = None, **props: Any) -> None:
        super().__init__(**props)
        self.backend = backend
        self.irq = self.irq_line(self.name)
        self.queues: list[QueueState] = []
        # back-ends signal from I/O threads while the guest acknowledges
        self._irq_lock = threading.Lock()
        self._reset_state()

    # -- state ------------------------------------------------------------

    def _reset_state(self) -> None:
        self.status = 0
        self.interrupt_status = 0
        self.config_generation = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0
        self.queue_sel = 0
        self.shm_sel = 0
        sizes = self.backend.queue_max_sizes() if self.backend is not None else []
        self.queues = [QueueState(max_size=int(n)) for n in sizes]
        self.irq.set(False)

    def reset(self) -> None:
        if self.backend is not None:
            self.backend.device_reset()
        self._reset_state()

    @property
    def version(self) -> int:
        return VERSION_LEGACY if self.legacy and self.backend is None else VERSION_MODERN

    def _queue(self) -> QueueState | None:
        return self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None

    # -- interrupts (called by the back-end) ------------------------------------------------------

    def notify_used(self) -> None:
        """Signal the driver that used buffers were published."""
        with self._irq_lock:
            self.interrupt_status |= INT_VRING
            self.irq.set(True)

    def notify_config(self) -> None:
        """Signal a configuration change (bumps ConfigGeneration)."""
        with self._irq_lock:
            self.config_generation = (self.config_generation + 1) & _U32
            self.interrupt_status |= INT_CONFIG
            self.irq.set(True)

    # -- MMIO ------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        mask = (1 << (8 * size)) - 1
        if self.backend is None:
            # QEMU answers the exact offsets and masks to the access size
            value = {MAGIC_VALUE: MAGIC, VERSION: self.version,
                     VENDOR_ID: self.vendor_id}.get(offset, 0)
            return value & mask
        if offset >= CONFIG:
            try:
                return self.backend.config_read(offset - CONFIG, size) & mask
            except Exception:  # a back-end bug must not take the guest down
                log.exception("virtio-mmio: config read at %#x failed", offset)
                return 0
        if size != 4 or offset & 3:
            return 0
        return self._read_reg(offset) & _U32

    def _read_reg(self, offset: int) -> int:
        assert self.backend is not None
        q = self._queue()
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION:
            return VERSION_MODERN
        if offset == DEVICE_ID:
            return self.backend.device_id
        if offset == VENDOR_ID:
            return self.vendor_id
        if offset == DEVICE_FEATURES:
            return self.backend.device_features() >> (32 * self.device_features_sel)
        if offset == QUEUE_NUM_MAX:
            return q.max_size if q is not None else 0
        if offset == QUEUE_READY:
            return int(q.ready) if q is not None else 0
        if offset == INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == STATUS:
            return self.status
        if offset in (SHM_LEN_LOW, SHM_LEN_HIGH, SHM_BASE_LOW, SHM_BASE_HIGH):
            return _U32  # no shared memory regions: "length -1"
        if offset == CONFIG_GENERATION:
            return self.config_generation
        if q is not None:
            field = {QUEUE_DESC_LOW: ("desc", 0), QUEUE_DESC_HIGH: ("desc", 1),
                     QUEUE_DRIVER_LOW: ("driver", 0), QUEUE_DRIVER_HIGH: ("driver", 1),
                     QUEUE_DEVICE_LOW: ("device", 0), QUEUE_DEVICE_HIGH: ("device", 1)}
            if offset in field:
                attr, half = field[offset]
                return getattr(q, attr) >> (32 * half)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if self.backend is None:
            return
        if offset >= CONFIG:
            try:
                self.backend.config_write(offset - CONFIG, size, value)
            except Exception:
                log.exception("virtio-mmio: config write at %#x failed", offset)
            return
        if size != 4 or offset & 3:
            return
        self._write_reg(offset, value & _U32)

    def _write_reg(self, offset: int, value: int) -> None:
        assert self.backend is not None
        q = self._queue()
        if offset == DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif offset == DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif offset == DRIVER_FEATURES:
            if self.driver_features_sel < 2:
                self.driver_features = _set_half(self.driver_features,
                                                 self.driver_features_sel, value)
        elif offset == QUEUE_SEL:
            self.queue_sel = value
        elif offset == QUEUE_NOTIFY:
            index = value & 0xFFFF
            if index < len(self.queues) and self.queues[index].ready:
                self.backend.queue_notify(index)
        elif offset == INTERRUPT_ACK:
            with self._irq_lock:
                self.interrupt_status &= ~value
                self.irq.set(self.interrupt_status != 0)
        elif offset == STATUS:
            if value == 0:
                self.reset()
            else:
                self.status = value & 0xFF
        elif offset == SHM_SEL:
            self.shm_sel = value
        elif q is not None:
            self._write_queue(q, offset, value)

    def _write_queue(self, q: QueueState, offset: int, value: int) -> None:
        if offset == QUEUE_RESET:
            if value == 1:
                q.clear()
            return
        if offset == QUEUE_READY:
            q.ready = bool(value & 1)
            return
        if q.ready:
            return  # the spec forbids changing a live queue; ignore
        if offset == QUEUE_NUM:
            q.size = value
        elif offset == QUEUE_DESC_LOW:
            q.desc = _set_half(q.desc, 0, value)
        elif offset == QUEUE_DESC_HIGH:
            q.desc = _set_half(q.desc, 1, value)
        elif offset == QUEUE_DRIVER_LOW:
            q.driver = _set_half(q.driver, 0, value)
        elif offset == QUEUE_DRIVER_HIGH:
            q.driver = _set_half(q.driver, 1, value)
        elif offset == QUEUE_DEVICE_LOW:
            q.device = _set_half(q.device, 0, value)
        elif offset == QUEUE_DEVICE_HIGH:
            q.device = _set_half(q.device, 1, value)

    # -- device tree ------------------------------------------------------------

    def fdt_node(self, tree: DeviceTree, parent: FdtNode, place: FdtPlacement) -> FdtNode:
        """``virtio_mmio@ADDR``, ``compatible = "virtio,mmio"``, one interrupt."""
        return tree.device_node(parent, "virtio_mmio", place, "virtio,mmio")

"""The virtio-mmio transport (virtio 1.2 section 4.2), register by register.

A :class:`VirtioMmioTransport` fills a 0x1000-byte slot: registers up to 0x100,
the device's configuration space from 0x100.  The board creates it around a
device and wires its interrupt line::

    dev = VirtioRng()                                  # any VirtioDevice
    slot = VirtioMmioTransport(dev)                    # legacy=True: version 1
    machine.add_device(slot, base)                     # realize: guest memory, call_soon
    slot.irq.connect(plic.set_irq, irq_number)

With no device it is an *empty slot*: MagicValue, Version and VendorID answer,
DeviceID reads 0 (the spec's "placeholder" value, so no driver claims it),
every other register reads 0 and writes are dropped, which is what QEMU
answers for its unused ``virtio_mmio@1000x000`` slots.

With a device, the modern register file (Version 2: 64-bit features, per-queue
size/ready/addresses, QueueReset, ConfigGeneration) or, with ``legacy=on``
(QEMU's ``force-legacy``), the legacy one of section 4.2.4 (Version 1:
GuestPageSize, QueueAlign, QueuePFN; 32 feature bits; no FEATURES_OK).
Status, features and queues belong to the :class:`~vmforge.virtio.device.VirtioDevice`;
the transport keeps only the selectors and InterruptStatus, and raises the
line when the device signals a used buffer or a configuration change.  A
plain object with the :class:`VirtioMmioBackend` methods works too (tests).

Threads: registers are accessed, and the device signals, on the machine's
thread; InterruptStatus is guarded by a lock all the same.

Differences from QEMU 7.2: QEMU's default ``force-legacy=on`` makes an empty
slot read Version 1; vmforge answers 2 unless ``legacy=on`` is asked for.
"""

from __future__ import annotations

import threading

from vmforge.device import Device, Prop
from vmforge.fdt import DeviceTree, FdtNode, FdtPlacement
from vmforge.lazy import lazy_logger
from vmforge.virtio import spec
from vmforge.virtio.device import StateError, VirtioDevice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, Protocol, runtime_checkable
else:
    from vmforge.typing_runtime import Protocol, runtime_checkable

__all__ = [
    "VirtioMmioBackend",
    "VirtioMmioTransport",
]

log = lazy_logger("vmforge.virtio.mmio")  # (logging imported by a message)

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
#: what QueueNumMax reads for every queue, as QEMU's (its VIRTQUEUE_MAX_SIZE)
VIRTQUEUE_MAX_SIZE = 1024
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

# device status bits (virtio 1.2 section 2.1), here too for the transport's users
STATUS_ACKNOWLEDGE = spec.STATUS_ACKNOWLEDGE
STATUS_DRIVER = spec.STATUS_DRIVER
STATUS_DRIVER_OK = spec.STATUS_DRIVER_OK
STATUS_FEATURES_OK = spec.STATUS_FEATURES_OK
STATUS_DEVICE_NEEDS_RESET = spec.STATUS_DEVICE_NEEDS_RESET
STATUS_FAILED = spec.STATUS_FAILED

#: bytes of a slot (registers, then config space), as the device tree's ``reg`` says
WINDOW_SIZE = 0x1000

_U32 = 0xFFFFFFFF



@runtime_checkable
class VirtioMmioBackend(Protocol):
    """The least a back-end offers the transport (a :class:`VirtioDevice` does more)."""

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


class _BackendDevice(VirtioDevice):
    """A :class:`VirtioMmioBackend` seen as a device: registers only, no rings."""

    name = "virtio-backend"

    def __init__(self, backend: VirtioMmioBackend) -> None:
        self.backend = backend
        self.device_id = backend.device_id  # type: ignore[misc]
        super().__init__()

    def queue_max_sizes(self) -> list[int]:
        return [int(n) for n in self.backend.queue_max_sizes()]

    def device_features(self) -> int:
        return self.backend.device_features()

    def config_read(self, offset: int, size: int) -> int:
        return self.backend.config_read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.backend.config_write(offset, size, value)

    def notify(self, index: int) -> None:
        if 0 <= index < len(self.queues) and self.queues[index].ready:
            self.backend.queue_notify(index)

    def reset_device(self) -> None:
        self.backend.device_reset()


def _set_half(value: int, half: int, word: int) -> int:
    shift = 32 * half
    return (value & ~(_U32 << shift)) | ((word & _U32) << shift)


_ADDRESS_REGS = {QUEUE_DESC_LOW: ("desc", 0), QUEUE_DESC_HIGH: ("desc", 1),
                 QUEUE_DRIVER_LOW: ("driver", 0), QUEUE_DRIVER_HIGH: ("driver", 1),
                 QUEUE_DEVICE_LOW: ("device", 0), QUEUE_DEVICE_HIGH: ("device", 1)}
_LEGACY_ONLY = {LEGACY_GUEST_PAGE_SIZE, LEGACY_QUEUE_ALIGN, LEGACY_QUEUE_PFN}
_MODERN_ONLY = {QUEUE_READY, SHM_SEL, SHM_LEN_LOW, SHM_LEN_HIGH, SHM_BASE_LOW, SHM_BASE_HIGH,
                QUEUE_RESET, CONFIG_GENERATION, *_ADDRESS_REGS}
STATE_VERSION = 1


class VirtioMmioTransport(Device):
    """A virtio-mmio slot around ``device``; an empty slot when it is None."""

    name: ClassVar[str] = "virtio-mmio"
    mmio_size: ClassVar[int] = WINDOW_SIZE
    valid_sizes: ClassVar[tuple[int, int]] = (1, 4)
    impl_sizes: ClassVar[tuple[int, int]] = (1, 4)

    legacy = Prop(bool, False, "legacy (Version 1) register file; an empty slot answers 1")
    force_legacy = Prop(bool, False, "QEMU's name for legacy")
    vendor_id = Prop(int, VENDOR_QEMU, "VendorID register")

    def __init__(self, backend: VirtioDevice | VirtioMmioBackend | None = None,
                 **props: Any) -> None:
        super().__init__(**props)
        if backend is None or isinstance(backend, VirtioDevice):
            self.dev: VirtioDevice | None = backend
        else:
            self.dev = _BackendDevice(backend)
        self.backend = backend
        self.irq = self.irq_line(self.name)
        self._irq_lock = threading.Lock()  # devices may signal from a completion callback
        if self.dev is not None:
            self.dev.legacy = self.is_legacy
            self.dev.transport = self
        self._reset_state()

    @property
    def is_legacy(self) -> bool:
        return bool(self.legacy or self.force_legacy)

    @property
    def version(self) -> int:
        return VERSION_LEGACY if self.is_legacy else VERSION_MODERN

    @property
    def queues(self) -> list[Any]:
        """The device's virtqueues (what QueueSel selects)."""
        return self.dev.queues if self.dev is not None else []

    @property
    def driver_features(self) -> int:
        return self.dev.driver_features if self.dev is not None else 0

    @property
    def status(self) -> int:
        return self.dev.status if self.dev is not None else 0

    # -- life cycle ------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self.interrupt_status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.queue_sel = 0
        self.shm_sel = 0
        self.guest_page_size = 4096
        self.irq.set(False)

    def realize(self, machine: Any) -> None:
        super().realize(machine)
        if self.dev is not None and not isinstance(self.dev, _BackendDevice):
            self.dev.realize(machine)
        if self.dev is not None:
            # QEMU's virtio-mmio offers VIRTQUEUE_MAX_SIZE for every queue, whatever the
            # device's own queue size (which only matters where the driver keeps it)
            for q in self.dev.queues:
                q.max_size = max(q.max_size, VIRTQUEUE_MAX_SIZE)

    def unrealize(self) -> None:
        if self.dev is not None and self.dev.realized:
            self.dev.unrealize()
        super().unrealize()

    def reset(self) -> None:
        if self.dev is not None:
            self.dev.reset()
        self._reset_state()

    def _queue(self) -> Any:
        qs = self.queues
        return qs[self.queue_sel] if self.queue_sel < len(qs) else None

    # -- interrupts (the device calls these on the machine's thread) ----------------------------

    def signal_used(self, queue_index: int = 0) -> None:
        """A used buffer was published: InterruptStatus bit 0, line up."""
        with self._irq_lock:
            self.interrupt_status |= INT_VRING
            self.irq.set(True)

    def signal_config(self) -> None:
        """The configuration changed (or the device needs a reset): bit 1, line up."""
        with self._irq_lock:
            self.interrupt_status |= INT_CONFIG
            self.irq.set(True)

    def notify_used(self) -> None:
        """Signal the driver that used buffers were published."""
        self.signal_used(0)

    def notify_config(self) -> None:
        """Signal a configuration change (bumps ConfigGeneration)."""
        if self.dev is not None:
            self.dev.config_changed()

    # -- MMIO ------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        mask = (1 << (8 * size)) - 1
        if self.dev is None:
            # QEMU answers the exact offsets and masks to the access size
            value = {MAGIC_VALUE: MAGIC, VERSION: self.version,
                     VENDOR_ID: self.vendor_id}.get(offset, 0)
            return value & mask
        try:
            if offset >= CONFIG:
                return self.dev.config_read(offset - CONFIG, size) & mask
            if size != 4 or offset & 3:
                return 0
            return self._read_reg(self.dev, offset) & _U32
        except Exception:  # a device bug must not take the guest down
            log.exception("virtio-mmio: read at %#x failed", offset)
            return 0

    def _read_reg(self, dev: VirtioDevice, offset: int) -> int:
        q = self._queue()
        legacy = self.is_legacy
        if offset in (SHM_LEN_LOW, SHM_LEN_HIGH):
            return _U32  # no shared memory regions: "length -1" (QEMU: on both interfaces)
        if (offset in _LEGACY_ONLY and not legacy) or (offset in _MODERN_ONLY and legacy):
            return 0
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION:
            return self.version
        if offset == DEVICE_ID:
            return dev.device_id
        if offset == VENDOR_ID:
            return self.vendor_id
        if offset == DEVICE_FEATURES:
            sel = self.device_features_sel
            if sel >= (1 if legacy else 2):
                return 0
            return dev.device_features() >> (32 * sel)
        if offset == QUEUE_NUM_MAX:
            return q.max_size if q is not None else 0
        if offset == QUEUE_READY:
            return int(q.ready) if q is not None else 0
        if offset == LEGACY_QUEUE_PFN:
            return q.pfn if q is not None else 0
        if offset == INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == STATUS:
            return dev.status
        if offset == CONFIG_GENERATION:
            return dev.config_generation
        if q is not None and offset in _ADDRESS_REGS:
            attr, half = _ADDRESS_REGS[offset]
            return getattr(q, attr) >> (32 * half)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if self.dev is None:
            return
        try:
            if offset >= CONFIG:
                self.dev.config_write(offset - CONFIG, size, value)
            elif size == 4 and not offset & 3:
                self._write_reg(self.dev, offset, value & _U32)
        except Exception:
            log.exception("virtio-mmio: write %#x at %#x failed", value, offset)

    def _write_reg(self, dev: VirtioDevice, offset: int, value: int) -> None:
        q = self._queue()
        legacy = self.is_legacy
        if (offset in _LEGACY_ONLY and not legacy) or (offset in _MODERN_ONLY and legacy):
            return
        if offset == DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif offset == DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif offset == DRIVER_FEATURES:
            sel = self.driver_features_sel
            if sel < (1 if legacy else 2):
                dev.set_driver_features(_set_half(dev.driver_features, sel, value))
        elif offset == QUEUE_SEL:
            self.queue_sel = value
        elif offset == QUEUE_NOTIFY:
            dev.notify(value & 0xFFFF)
        elif offset == INTERRUPT_ACK:
            with self._irq_lock:
                self.interrupt_status &= ~value
                self.irq.set(self.interrupt_status != 0)
        elif offset == STATUS:
            if value == 0:
                self.reset()
            else:
                dev.set_status(value)
        elif offset == SHM_SEL:
            self.shm_sel = value
        elif offset == LEGACY_GUEST_PAGE_SIZE:
            self.guest_page_size = value
        elif q is not None:
            self._write_queue(q, offset, value)

    def _write_queue(self, q: Any, offset: int, value: int) -> None:
        if offset == QUEUE_RESET:
            if value == 1:
                q.clear()
            return
        if offset == QUEUE_READY:
            if value & 1 and not q.ready:
                q.enable()
            elif not value & 1 and q.ready:
                q.clear_ready()
            return
        if offset == LEGACY_QUEUE_PFN:
            if value == 0:
                q.clear()
            elif not q.ready:
                q.pfn = value
                q.legacy_layout(self.guest_page_size)
                q.enable()
            return
        if q.ready:
            return  # the spec forbids changing a live queue; ignore
        if offset == QUEUE_NUM:
            q.size = value
        elif offset == LEGACY_QUEUE_ALIGN:
            q.align = value
        elif offset in _ADDRESS_REGS:
            attr, half = _ADDRESS_REGS[offset]
            setattr(q, attr, _set_half(getattr(q, attr), half, value))

    # -- state -----------------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        """The transport's registers and the device's record."""
        return {"type": "virtio-mmio", "version": STATE_VERSION, "legacy": self.is_legacy,
                "interrupt_status": self.interrupt_status,
                "device_features_sel": self.device_features_sel,
                "driver_features_sel": self.driver_features_sel,
                "queue_sel": self.queue_sel, "shm_sel": self.shm_sel,
                "guest_page_size": self.guest_page_size,
                "device": self.dev.save_state() if self.dev is not None else None}

    def check_state(self, record: Any) -> None:
        """:class:`StateError` unless :meth:`load_state` would take ``record``."""
        self._check_transport(record)
        if self.dev is not None:
            self.dev.check_state(record["device"])

    def load_state(self, record: dict[str, Any]) -> None:
        """Take a :meth:`save_state` record; :class:`StateError` and nothing changed
        when it does not fit."""
        keys = self._check_transport(record)
        if self.dev is not None:
            self.dev.load_state(record["device"])  # checks everything before applying
        for key in keys:
            setattr(self, key, record[key])
        with self._irq_lock:
            self.irq.set(self.interrupt_status != 0)

    def _check_transport(self, record: Any) -> tuple[str, ...]:
        if not isinstance(record, dict) or record.get("type") != "virtio-mmio":
            raise StateError("virtio-mmio state: not a virtio-mmio record")
        if record.get("version") != STATE_VERSION:
            raise StateError(f"virtio-mmio state: version {record.get('version')!r}")
        if record.get("legacy") is not self.is_legacy:
            raise StateError("virtio-mmio state: legacy/modern mismatch")
        keys = ("interrupt_status", "device_features_sel", "driver_features_sel", "queue_sel",
                "shm_sel", "guest_page_size")
        for key in keys:
            value = record.get(key)
            if type(value) is not int or not 0 <= value <= _U32:
                raise StateError(f"virtio-mmio state: {key}={value!r}")
        if record["interrupt_status"] & ~(INT_VRING | INT_CONFIG):
            raise StateError("virtio-mmio state: interrupt_status has unknown bits")
        if (record.get("device") is None) != (self.dev is None):
            raise StateError("virtio-mmio state: device presence differs")
        return keys

    # -- device tree -------------------------------------------------------------------------

    def fdt_node(self, tree: DeviceTree, parent: FdtNode, place: FdtPlacement) -> FdtNode:
        """``virtio_mmio@ADDR``, ``compatible = "virtio,mmio"``, one interrupt."""
        return tree.device_node(parent, "virtio_mmio", place, "virtio,mmio")

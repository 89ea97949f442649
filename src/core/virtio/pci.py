"""The virtio-pci transport (virtio 1.2 section 4.1), laid out as QEMU 7.2 lays it out.

:class:`VirtioPciTransport` is a PCI function around the same
:class:`~vmforge.virtio.device.VirtioDevice` objects the mmio transport drives::

    dev = VirtioRng()
    fn = VirtioPciTransport(dev)               # transitional: legacy BAR0 + modern BAR4
    host.bus.plug(fn)                          # a GpexHost's bus; realize wires memory

The ``-device`` names are the wrappers ``virtio-blk-pci``, ``virtio-net-pci``,
``virtio-rng-pci`` (and ``virtio-serial-pci``): each takes the transport's
properties plus those of its ``-device`` variant (``virtio-blk-device`` and so
on), and creates that device.

What the function offers (QEMU's ``virtio_pci_device_plugged``):

- IDs: vendor 1af4; a transitional function (legacy present) has device id
  0x1000 + the legacy id (0x1001 block, 0x1000 net, 0x1005 entropy, ...),
  revision 0 and subsystem 1af4:<virtio device id>; a modern-only one
  (``disable-legacy=on``) has 0x1040 + the virtio id, revision 1 and QEMU's
  default subsystem 1af4:1100.  The class follows the device (0100 block,
  0200 net, 0780 console, 00ff otherwise); INTx pin A.
- BAR0: the legacy I/O registers (section 4.1.4.8) and the device's
  configuration after them (at 20, or 24 while MSI-X is enabled), unless
  ``disable-legacy``; BAR1: the MSI-X table and PBA (``vectors``, default the
  number of queues + 1); BAR4: 16 KiB of 64-bit prefetchable memory with the
  modern structures, one per 4 KiB page: common configuration (0), ISR
  (0x1000), device configuration (0x2000) and notifications (0x3000,
  ``notify_off_multiplier`` 4: queue N at 0x3000 + 4 N), unless
  ``disable-modern``.  Capabilities at 0x40.. (common, ISR, device, notify,
  the PCI configuration access window) and MSI-X at 0x98, as on QEMU.
- Interrupts: a used buffer sets ISR bit 0, a configuration change ISR bits 0
  and 1 (after DRIVER_OK); while MSI-X is disabled INTx follows ISR bit 0 and a
  read of the ISR returns and clears it, lowering INTx; with MSI-X enabled the
  queue's (``queue_msix_vector``) or the configuration's
  (``config_msix_vector``) vector fires instead.  A vector number the table
  does not have reads back as NO_VECTOR (0xffff).

Which interface the driver uses is decided when it writes the first register
after a reset: the legacy BAR makes the device legacy (no VERSION_1, 32
feature bits, queues placed by PFN), the common configuration makes it
modern.  Threads: everything runs on the machine's thread; ISR is guarded.

Differences from QEMU 7.2: an 8-byte access to the modern BAR is split into
two 4-byte ones (QEMU refuses it); ``disable-legacy=auto`` always keeps
legacy (vmforge's buses are conventional, like QEMU's root bus); bus
mastering is not enforced.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, ClassVar

from vmforge.device import DeviceError, Prop
from vmforge.pci import regs
from vmforge.pci.device import PciDevice, PciStateError
from vmforge.pci.msix import Msix
from vmforge.virtio import spec
from vmforge.virtio.device import StateError, VirtioDevice

__all__ = ["VirtioBlkPci", "VirtioNetPci", "VirtioPciTransport", "VirtioRngPci",
           "VirtioSerialPci"]

log = logging.getLogger("vmforge.virtio.pci")

# -- capabilities (section 4.1.4) -------------------------------------------------------
CAP_COMMON_CFG = 1
CAP_NOTIFY_CFG = 2
CAP_ISR_CFG = 3
CAP_DEVICE_CFG = 4
CAP_PCI_CFG = 5
CAP_LEN = 16  # struct virtio_pci_cap
NOTIFY_CAP_LEN = 20  # + notify_off_multiplier
PCI_CFG_CAP_LEN = 20  # + pci_cfg_data
# fields of struct virtio_pci_cap
CAP_CFG_TYPE, CAP_BAR, CAP_ID, CAP_OFFSET, CAP_LENGTH = 3, 4, 5, 8, 12
NOTIFY_OFF_MULTIPLIER = 16
PCI_CFG_DATA = 16

# -- the modern BAR (QEMU's layout) ------------------------------------------------------------
MODERN_BAR = 4
MSIX_BAR = 1
LEGACY_BAR = 0
REGION_SIZE = 0x1000
COMMON_OFFSET, ISR_OFFSET, DEVICE_OFFSET, NOTIFY_OFFSET = 0x0000, 0x1000, 0x2000, 0x3000
MODERN_BAR_SIZE = 0x4000
QUEUE_NOTIFY_MULT = 4
QUEUE_MAX = 1024  # VIRTIO_QUEUE_MAX

# -- common configuration (struct virtio_pci_common_cfg) ------------------------------------------
DFSELECT, DF, GFSELECT, GF = 0x00, 0x04, 0x08, 0x0C
MSIX_CONFIG, NUM_QUEUES, STATUS, CFG_GENERATION = 0x10, 0x12, 0x14, 0x15
Q_SELECT, Q_SIZE, Q_MSIX, Q_ENABLE, Q_NOTIFY_OFF = 0x16, 0x18, 0x1A, 0x1C, 0x1E
Q_DESC_LO, Q_DESC_HI, Q_AVAIL_LO, Q_AVAIL_HI, Q_USED_LO, Q_USED_HI = (
    0x20, 0x24, 0x28, 0x2C, 0x30, 0x34)
Q_NOTIFY_DATA, Q_RESET = 0x38, 0x3A

# -- the legacy I/O BAR (section 4.1.4.8) --------------------------------------------------------
L_HOST_FEATURES, L_GUEST_FEATURES, L_QUEUE_PFN, L_QUEUE_NUM = 0x00, 0x04, 0x08, 0x0C
L_QUEUE_SEL, L_QUEUE_NOTIFY, L_STATUS, L_ISR = 0x0E, 0x10, 0x12, 0x13
L_MSI_CONFIG_VECTOR, L_MSI_QUEUE_VECTOR = 0x14, 0x16
L_CONFIG_OFF = 20
L_CONFIG_OFF_MSIX = 24
L_PFN_SHIFT = 12
L_VRING_ALIGN = 4096

ISR_QUEUE = 1
ISR_CONFIG = 2
NO_VECTOR = 0xFFFF

#: transitional PCI device ids by virtio device id
LEGACY_DEVICE_IDS = {1: 0x1000, 2: 0x1001, 5: 0x1002, 3: 0x1003, 8: 0x1004, 4: 0x1005,
                     9: 0x1009}
MODERN_DEVICE_ID_BASE = 0x1040
CLASS_BY_DEVICE = {spec.VIRTIO_ID_BLOCK: regs.CLASS_STORAGE_SCSI,
                   spec.VIRTIO_ID_NET: regs.CLASS_NETWORK_ETHERNET,
                   spec.VIRTIO_ID_CONSOLE: regs.CLASS_COMMUNICATION_OTHER}

_U32 = 0xFFFFFFFF
STATE_VERSION = 1
_ADDR_REGS = {Q_DESC_LO: ("desc", 0), Q_DESC_HI: ("desc", 1), Q_AVAIL_LO: ("driver", 0),
              Q_AVAIL_HI: ("driver", 1), Q_USED_LO: ("device", 0), Q_USED_HI: ("device", 1)}


def _set_half(value: int, half: int, word: int) -> int:
    shift = 32 * half
    return (value & ~(_U32 << shift)) | ((word & _U32) << shift)


def _pow2ceil(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _parse_onoffauto(value: Any) -> str:
    text = str(value).strip().lower()
    if text in ("auto", ""):
        return "auto"
    if text in ("on", "yes", "true", "1"):
        return "on"
    if text in ("off", "no", "false", "0"):
        return "off"
    raise ValueError(f"{value!r} is not on/off/auto")


class _ModernBar:
    """BAR4: common cfg, ISR, device cfg, notify; 4 KiB each."""

    valid_sizes: ClassVar[tuple[int, int]] = (1, 8)
    impl_sizes: ClassVar[tuple[int, int]] = (1, 4)

    def __init__(self, t: VirtioPciTransport) -> None:
        self.t = t

    def read(self, offset: int, size: int) -> int:
        t = self.t
        try:
            region, off = divmod(offset, REGION_SIZE)
            if region == 0:
                return t.common_read(off, size)
            if region == 1:
                return t.isr_read()
            if region == 2:
                return t.device_config_read(off, size)
            return 0
        except Exception:  # a device bug must not take the guest down
            log.exception("%s: read at modern BAR offset %#x failed", t.name, offset)
            return 0

    def write(self, offset: int, size: int, value: int) -> None:
        t = self.t
        try:
            region, off = divmod(offset, REGION_SIZE)
            if region == 0:
                t.common_write(off, size, value)
            elif region == 2:
                t.dev.config_write(off, size, value)
            elif region == 3:
                t.queue_notify(off // QUEUE_NOTIFY_MULT)
        except Exception:
            log.exception("%s: write %#x at modern BAR offset %#x failed", t.name, value, offset)


class _LegacyBar:
    """BAR0: the legacy register file, then the device configuration."""

    valid_sizes: ClassVar[tuple[int, int]] = (1, 4)
    impl_sizes: ClassVar[tuple[int, int]] = (1, 4)

    def __init__(self, t: VirtioPciTransport) -> None:
        self.t = t

    def read(self, offset: int, size: int) -> int:
        try:
            return self.t.legacy_read(offset, size)
        except Exception:
            log.exception("%s: legacy read at %#x failed", self.t.name, offset)
            return 0

    def write(self, offset: int, size: int, value: int) -> None:
        try:
            self.t.legacy_write(offset, size, value)
        except Exception:
            log.exception("%s: legacy write %#x at %#x failed", self.t.name, value, offset)


class VirtioPciTransport(PciDevice):
    """A virtio device as a PCI function (modern, transitional or legacy)."""

    name: ClassVar[str] = "virtio-pci"
    vendor_id = regs.VENDOR_ID_REDHAT_QUMRANET
    interrupt_pin = 1

    disable_legacy = Prop(_parse_onoffauto, "auto", "no legacy I/O BAR (on/off/auto)")
    disable_modern = Prop(bool, False, "no modern capabilities and BAR")
    vectors = Prop(int, -1, "MSI-X vectors (-1: queues + 1; 0: no MSI-X)")

    def __init__(self, device: VirtioDevice | None = None, **props: Any) -> None:
        if device is None:
            raise DeviceError(f"{self.name}: needs a virtio device")
        self.dev = device
        super().__init__(**props)
        self.legacy_present = self.disable_legacy != "on" and (
            self.disable_legacy == "off" or device.device_id in LEGACY_DEVICE_IDS)
        self.modern_present = not self.disable_modern
        if not self.legacy_present and not self.modern_present:
            raise DeviceError(f"{self.name}: disable-legacy and disable-modern leave nothing")
        if self.legacy_present and device.device_id not in LEGACY_DEVICE_IDS:
            raise DeviceError(f"{self.name}: device id {device.device_id} has no legacy "
                              "interface; use disable-legacy=on")
        nvectors = len(device.queues) + 1 if self.vectors < 0 else self.vectors
        if not 0 <= nvectors <= 2048:
            raise DeviceError(f"{self.name}: vectors={self.vectors} is not in 0..2048")
        self.nvectors = nvectors
        self._isr_lock = threading.Lock()
        self._config_cap: int | None = None
        self._build_functions()
        device.transport = self
        device.legacy = not self.modern_present
        self._reset_transport()

    # -- layout (QEMU's virtio_pci_device_plugged) ----------------------------------------------

    def _init_header(self) -> None:
        dev = self.dev
        legacy = self.disable_legacy != "on" and (self.disable_legacy == "off"
                                                  or dev.device_id in LEGACY_DEVICE_IDS)
        if legacy:
            self.device_id = LEGACY_DEVICE_IDS.get(dev.device_id, 0)
            self.revision = 0
            self.subsystem_vendor_id = regs.SUBVENDOR_ID_REDHAT_QUMRANET
            self.subsystem_id = dev.device_id
        else:
            self.device_id = MODERN_DEVICE_ID_BASE + dev.device_id
            self.revision = 1
        self.class_code = CLASS_BY_DEVICE.get(dev.device_id, regs.CLASS_OTHERS)
        super()._init_header()

    def _build_functions(self) -> None:
        if self.modern_present:
            self.modern_bar = _ModernBar(self)
            for cfg_type, offset in ((CAP_COMMON_CFG, COMMON_OFFSET), (CAP_ISR_CFG, ISR_OFFSET),
                                     (CAP_DEVICE_CFG, DEVICE_OFFSET)):
                self._add_virtio_cap(cfg_type, CAP_LEN, offset, REGION_SIZE)
            notify = self._add_virtio_cap(CAP_NOTIFY_CFG, NOTIFY_CAP_LEN, NOTIFY_OFFSET,
                                          QUEUE_MAX * QUEUE_NOTIFY_MULT)
            self._put(notify + NOTIFY_OFF_MULTIPLIER, 4, QUEUE_NOTIFY_MULT)
            cfg = self._add_virtio_cap(CAP_PCI_CFG, PCI_CFG_CAP_LEN, 0, 0, bar=0)
            for field, size in ((CAP_BAR, 1), (CAP_OFFSET, 4), (CAP_LENGTH, 4),
                                (PCI_CFG_DATA, 4)):
                self.wmask[cfg + field:cfg + field + size] = b"\xff" * size
            self._config_cap = cfg
        if self.nvectors:
            Msix.exclusive_bar(self, self.nvectors, MSIX_BAR)  # sets self.msix
        if self.modern_present:
            self.register_bar(MODERN_BAR, MODERN_BAR_SIZE, regs.BASE_ADDRESS_SPACE_MEMORY
                              | regs.BASE_ADDRESS_MEM_PREFETCH | regs.BASE_ADDRESS_MEM_TYPE_64,
                              self.modern_bar, f"{self.name}-modern")
        if self.legacy_present:
            off = L_CONFIG_OFF_MSIX if self.msix is not None else L_CONFIG_OFF
            size = max(4, _pow2ceil(off + len(self.dev.config_bytes())))
            self.register_bar(LEGACY_BAR, size, regs.BASE_ADDRESS_SPACE_IO, _LegacyBar(self),
                              f"{self.name}-legacy")

    def _put(self, offset: int, size: int, value: int) -> None:
        self.config[offset:offset + size] = value.to_bytes(size, "little")

    def _add_virtio_cap(self, cfg_type: int, length: int, offset: int, size: int,
                        bar: int = MODERN_BAR) -> int:
        cap = self.add_capability(regs.CAP_ID_VNDR, length)
        self.config[cap + 2] = length
        self.config[cap + CAP_CFG_TYPE] = cfg_type
        self.config[cap + CAP_BAR] = bar
        self._put(cap + CAP_OFFSET, 4, offset)
        self._put(cap + CAP_LENGTH, 4, size)
        return cap

    # -- life cycle ------------------------------------------------------------------------------

    def _reset_transport(self) -> None:
        self.isr = 0
        self.dfselect = self.gfselect = 0
        self.queue_sel = 0
        self.config_vector = NO_VECTOR
        self.queue_vectors = [NO_VECTOR] * len(self.dev.queues)
        self.set_irq(False)

    def virtio_reset(self) -> None:
        """The driver wrote 0 to the device status (QEMU's ``virtio_pci_reset``)."""
        self.dev.reset()
        self.dev.legacy = not self.modern_present
        self._reset_transport()

    def realize(self, machine: Any) -> None:
        super().realize(machine)
        self.dev.realize(machine)

    def unrealize(self) -> None:
        if self.dev.realized:
            self.dev.unrealize()
        super().unrealize()

    def reset(self) -> None:
        """System reset: the PCI function and the virtio device."""
        super().reset()  # configuration space and MSI-X
        self.virtio_reset()

    # -- interrupts (the device calls these) -----------------------------------------------------

    @property
    def msix_enabled(self) -> bool:
        return self.msix is not None and self.msix.enabled

    def _notify_vector(self, vector: int) -> None:
        if self.msix is not None and self.msix.enabled:
            if vector != NO_VECTOR:
                self.msix.notify(vector)
        else:
            self.set_irq(bool(self.isr & ISR_QUEUE))

    def signal_used(self, queue_index: int) -> None:
        """A used buffer was published on ``queue_index``."""
        with self._isr_lock:
            self.isr |= ISR_QUEUE
            vectors = self.queue_vectors
            self._notify_vector(vectors[queue_index] if 0 <= queue_index < len(vectors)
                                else NO_VECTOR)

    def signal_config(self) -> None:
        """The configuration changed (QEMU's ``virtio_notify_config``: after DRIVER_OK)."""
        if not self.dev.status & spec.STATUS_DRIVER_OK:
            return
        with self._isr_lock:
            self.isr |= ISR_QUEUE | ISR_CONFIG
            self._notify_vector(self.config_vector)

    def isr_read(self) -> int:
        """Read-to-clear ISR; INTx goes low."""
        with self._isr_lock:
            value, self.isr = self.isr, 0
            self.set_irq(False)
        return value

    def _use_vector(self, value: int) -> int:
        return value if self.msix is not None and value < self.nvectors else NO_VECTOR

    def queue_notify(self, index: int) -> None:
        if 0 <= index < QUEUE_MAX:
            self.dev.notify(index)

    # -- device configuration ------------------------------------------------------------------

    def device_config_read(self, offset: int, size: int) -> int:
        """Past the end of the configuration reads are all-ones (QEMU)."""
        if offset + size > len(self.dev.config_bytes()):
            return (1 << (8 * size)) - 1
        return self.dev.config_read(offset, size)

    # -- modern common configuration --------------------------------------------------------------

    def _queue(self) -> Any:
        qs = self.dev.queues
        return qs[self.queue_sel] if self.queue_sel < len(qs) else None

    def _choose_modern(self) -> None:
        if self.dev.status == 0 and self.dev.legacy:
            self.dev.legacy = False

    def common_read(self, off: int, size: int) -> int:
        dev, q = self.dev, self._queue()
        mask = (1 << (8 * size)) - 1
        if off == DFSELECT:
            value = self.dfselect
        elif off == DF:
            value = self._modern_features() >> (32 * self.dfselect) if self.dfselect <= 1 else 0
        elif off == GFSELECT:
            value = self.gfselect
        elif off == GF:
            value = dev.driver_features >> (32 * self.gfselect) if self.gfselect <= 1 else 0
        elif off == MSIX_CONFIG:
            value = self.config_vector
        elif off == NUM_QUEUES:
            value = len(dev.queues)
        elif off == STATUS:
            value = dev.status
        elif off == CFG_GENERATION:
            value = dev.config_generation & 0xFF
        elif off == Q_SELECT:
            value = self.queue_sel
        elif off == Q_NOTIFY_OFF:
            value = self.queue_sel
        elif q is None:
            value = 0
        elif off == Q_SIZE:
            value = q.size
        elif off == Q_MSIX:
            value = self.queue_vectors[q.index]
        elif off == Q_ENABLE:
            value = int(q.ready)
        elif off in _ADDR_REGS:
            attr, half = _ADDR_REGS[off]
            value = getattr(q, attr) >> (32 * half)
        else:
            value = 0
        return value & mask

    def _modern_features(self) -> int:
        dev = self.dev
        if not dev.legacy:
            return dev.device_features()
        dev.legacy = False
        try:
            return dev.device_features()
        finally:
            dev.legacy = True

    def common_write(self, off: int, size: int, value: int) -> None:
        dev = self.dev
        value &= (1 << (8 * size)) - 1
        if off == DFSELECT:
            self.dfselect = value
        elif off == GFSELECT:
            self.gfselect = value
        elif off == GF:
            self._choose_modern()
            if self.gfselect <= 1:
                dev.set_driver_features(_set_half(dev.driver_features, self.gfselect, value))
        elif off == MSIX_CONFIG:
            self.config_vector = self._use_vector(value)
        elif off == STATUS:
            self._choose_modern()
            if value & 0xFF == 0:
                self.virtio_reset()
            else:
                dev.set_status(value & 0xFF)
        elif off == Q_SELECT:
            if value < QUEUE_MAX:
                self.queue_sel = value
        else:
            q = self._queue()
            if q is not None:
                self._queue_write(q, off, value)

    def _queue_write(self, q: Any, off: int, value: int) -> None:
        if off == Q_MSIX:
            self.queue_vectors[q.index] = self._use_vector(value)
        elif off == Q_ENABLE:
            if value != 1:
                self.dev.virtio_error(f"wrong value for queue_enable {value:#x}", queue=q)
            elif not q.ready:
                q.enable()
        elif off == Q_RESET:
            if value == 1 and self.dev.has_feature(spec.VIRTIO_F_RING_RESET):
                q.clear()
                self.queue_vectors[q.index] = NO_VECTOR
        elif q.ready:
            return  # the driver must not change a live queue
        elif off == Q_SIZE:
            q.size = value
        elif off in _ADDR_REGS:
            attr, half = _ADDR_REGS[off]
            setattr(q, attr, _set_half(getattr(q, attr), half, value))

    # -- legacy I/O registers -----------------------------------------------------------------

    @property
    def legacy_config_offset(self) -> int:
        return L_CONFIG_OFF_MSIX if self.msix_enabled else L_CONFIG_OFF

    def _choose_legacy(self) -> None:
        if self.dev.status == 0 and not self.dev.legacy:
            self.dev.legacy = True

    def _legacy_features(self) -> int:
        dev = self.dev
        if dev.legacy:
            return dev.device_features() & _U32
        dev.legacy = True
        try:
            return dev.device_features() & _U32
        finally:
            dev.legacy = False

    def legacy_read(self, off: int, size: int) -> int:
        dev = self.dev
        mask = (1 << (8 * size)) - 1
        config = self.legacy_config_offset
        if off >= config:
            return self.device_config_read(off - config, size)
        q = self._queue()
        if off == L_HOST_FEATURES:
            value = self._legacy_features()
        elif off == L_GUEST_FEATURES:
            value = dev.driver_features & _U32
        elif off == L_QUEUE_PFN:
            value = q.pfn if q is not None else 0
        elif off == L_QUEUE_NUM:
            value = q.size if q is not None else 0
        elif off == L_QUEUE_SEL:
            value = self.queue_sel
        elif off == L_STATUS:
            value = dev.status
        elif off == L_ISR:
            value = self.isr_read()
        elif off == L_MSI_CONFIG_VECTOR:
            value = self.config_vector
        elif off == L_MSI_QUEUE_VECTOR:
            value = self.queue_vectors[q.index] if q is not None else NO_VECTOR
        else:
            value = 0
        return value & mask

    def legacy_write(self, off: int, size: int, value: int) -> None:
        dev = self.dev
        value &= (1 << (8 * size)) - 1
        config = self.legacy_config_offset
        if off >= config:
            dev.config_write(off - config, size, value)
            return
        q = self._queue()
        if off == L_GUEST_FEATURES:
            self._choose_legacy()
            dev.set_driver_features(value)
        elif off == L_QUEUE_PFN:
            self._choose_legacy()
            if value == 0:
                self.virtio_reset()  # as QEMU: a zero PFN resets the device
            elif q is not None and not q.ready:
                q.pfn = value
                q.size = q.max_size
                q.legacy_layout(1 << L_PFN_SHIFT)
                q.enable()
        elif off == L_QUEUE_SEL:
            if value < QUEUE_MAX:
                self.queue_sel = value
        elif off == L_QUEUE_NOTIFY:
            self.queue_notify(value)
        elif off == L_STATUS:
            self._choose_legacy()
            if value & 0xFF == 0:
                self.virtio_reset()
            else:
                dev.set_status(value & 0xFF)
        elif off == L_MSI_CONFIG_VECTOR:
            self.config_vector = self._use_vector(value)
        elif off == L_MSI_QUEUE_VECTOR and q is not None:
            self.queue_vectors[q.index] = self._use_vector(value)

    # -- the PCI configuration access capability ----------------------------------------------

    def _cfg_window(self, addr: int, size: int) -> tuple[int, int] | None:
        cap = self._config_cap
        if cap is None:
            return None
        data = cap + PCI_CFG_DATA
        if addr >= data + 4 or addr + size <= data:
            return None
        c = self.config
        offset = int.from_bytes(c[cap + CAP_OFFSET:cap + CAP_OFFSET + 4], "little")
        length = int.from_bytes(c[cap + CAP_LENGTH:cap + CAP_LENGTH + 4], "little")
        if length not in (1, 2, 4) or offset % length:
            return None
        return offset, length

    def config_read(self, addr: int, size: int) -> int:
        window = self._cfg_window(addr, size)
        if window is not None:
            offset, length = window
            value = self.modern_bar.read(offset, length)
            data = self._config_cap + PCI_CFG_DATA  # type: ignore[operator]
            self._put(data, length, value & ((1 << (8 * length)) - 1))
        return super().config_read(addr, size)

    def config_write(self, addr: int, size: int, value: int) -> None:
        super().config_write(addr, size, value)
        window = self._cfg_window(addr, size)
        if window is not None:
            offset, length = window
            data = self._config_cap + PCI_CFG_DATA  # type: ignore[operator]
            self.modern_bar.write(offset, length,
                                  int.from_bytes(self.config[data:data + length], "little"))

    # -- state -----------------------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        """The PCI function, MSI-X, the transport's registers and the device's record."""
        return {"type": "virtio-pci", "version": STATE_VERSION, "pci": self.save_pci_state(),
                "isr": self.isr, "dfselect": self.dfselect, "gfselect": self.gfselect,
                "queue_sel": self.queue_sel, "config_vector": self.config_vector,
                "queue_vectors": list(self.queue_vectors), "device": self.dev.save_state()}

    def check_state(self, record: Any) -> None:
        """Raise :class:`StateError` unless the transport's part of ``record`` fits
        (the device's part is checked by the device when it loads)."""
        if not isinstance(record, dict) or record.get("type") != "virtio-pci":
            raise StateError(f"{self.name} state: not a virtio-pci record")
        if record.get("version") != STATE_VERSION:
            raise StateError(f"{self.name} state: version {record.get('version')!r}")
        try:
            self.check_pci_state(record.get("pci"))
        except PciStateError as exc:
            raise StateError(f"{self.name} state: {exc}") from exc
        limits = {"isr": ISR_QUEUE | ISR_CONFIG, "dfselect": _U32, "gfselect": _U32,
                  "queue_sel": QUEUE_MAX - 1, "config_vector": NO_VECTOR}
        for key, hi in limits.items():
            value = record.get(key)
            if type(value) is not int or not 0 <= value <= hi:
                raise StateError(f"{self.name} state: {key}={value!r}")
        vectors = record.get("queue_vectors")
        if (not isinstance(vectors, list) or len(vectors) != len(self.dev.queues)
                or any(type(v) is not int or not 0 <= v <= NO_VECTOR for v in vectors)):
            raise StateError(f"{self.name} state: queue_vectors is not one vector per queue")

    def load_state(self, record: dict[str, Any]) -> None:
        """Take a :meth:`save_state` record; :class:`StateError` and nothing changed
        when it does not fit."""
        self.check_state(record)
        self.dev.load_state(record["device"])  # checks all of it before applying
        self.apply_pci_state(record["pci"])
        for key in ("dfselect", "gfselect", "queue_sel", "config_vector"):
            setattr(self, key, record[key])
        self.queue_vectors = list(record["queue_vectors"])
        with self._isr_lock:
            self.isr = record["isr"]


class _VirtioPciWrapper(VirtioPciTransport):
    """``virtio-*-pci``: the transport plus the device its ``-device`` variant makes."""

    #: the ``vmforge.device`` name of the device inside
    device_driver: ClassVar[str] = ""

    def __init__(self, device: VirtioDevice | None = None, **props: Any) -> None:
        own = set(PciDevice.properties()) | set(VirtioPciTransport.properties())
        mine = {k: v for k, v in props.items() if k.replace("-", "_") in own}
        if device is None:
            rest = {k: v for k, v in props.items() if k.replace("-", "_") not in own}
            device = self.inner_class()(**rest)
        elif len(mine) != len(props):
            raise DeviceError(f"{self.name}: device properties given with a device")
        super().__init__(device, **mine)

    @classmethod
    def inner_class(cls) -> type[VirtioDevice]:
        from vmforge.plugins import registry

        try:
            return registry().load("device", cls.device_driver)
        except Exception as exc:
            raise DeviceError(f"{cls.name} needs the device {cls.device_driver!r}: "
                              f"{exc}") from exc

    @classmethod
    def properties(cls) -> dict[str, Prop[Any]]:
        """The transport's properties and the inner device's (when it is installed)."""
        out = super().properties()
        try:
            inner = cls.inner_class().properties()
        except DeviceError:
            inner = {}
        return {**inner, **out}


class VirtioBlkPci(_VirtioPciWrapper):
    name: ClassVar[str] = "virtio-blk-pci"
    device_driver: ClassVar[str] = "virtio-blk-device"


class VirtioNetPci(_VirtioPciWrapper):
    name: ClassVar[str] = "virtio-net-pci"
    device_driver: ClassVar[str] = "virtio-net-device"


class VirtioRngPci(_VirtioPciWrapper):
    name: ClassVar[str] = "virtio-rng-pci"
    device_driver: ClassVar[str] = "virtio-rng-device"


class VirtioSerialPci(_VirtioPciWrapper):
    name: ClassVar[str] = "virtio-serial-pci"
    device_driver: ClassVar[str] = "virtio-serial-device"

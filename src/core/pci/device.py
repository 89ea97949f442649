"""A PCI function: its configuration space, BARs, capabilities and INTx pin.

:class:`PciDevice` is the base of every device on a :class:`~vmforge.pci.bus.PciBus`
(QEMU's ``PCIDevice``).  A subclass sets its identity as class attributes and,
in ``__init__``, declares BARs and capabilities::

    class MyNic(PciDevice):
        name = "my-nic"
        vendor_id, device_id, class_code = 0x1234, 0x0001, regs.CLASS_NETWORK_ETHERNET

        def __init__(self, **props):
            super().__init__(**props)
            self.register_bar(0, 0x1000, regs.BASE_ADDRESS_SPACE_MEMORY, self.regs_ops)
            self.add_capability(regs.CAP_ID_VNDR, 8)

Configuration space follows QEMU's ``pci.c``: every function holds 4 KiB
(``config_size`` is 256 for a conventional function, 4096 for an Express
one; past it reads are all-ones), with a per-byte writable mask (``wmask``),
a write-1-to-clear mask (``w1cmask``) and a mask of the bytes a state load
must find unchanged (``cmask``).  The header's identity is read-only;
Command (I/O, memory, bus master, SERR, INTx disable), Cache Line Size,
Interrupt Line and the BAR address bits are writable; the device-specific
area above the header is writable except where a capability sits.

BARs: :meth:`register_bar` gives a BAR its size, type bits and the MMIO ops
behind it.  Sizing works as on hardware (write all-ones, read back the size
mask); when Command enables I/O or memory decoding, the region is mapped at
the BAR's address in the bus's I/O or memory :class:`~vmforge.memory.AddressSpace`,
and unmapped when decoding is disabled or the BAR moves (QEMU's
``pci_bar_address``: address 0, a wrapping range or a 32-bit BAR past 4 GiB
stay unmapped).

INTx: :meth:`set_irq` drives the function's pin; the Status register's
Interrupt bit follows it, Command's Interrupt Disable masks it, and the bus
swizzles it onto the host bridge's lines.
"""

from __future__ import annotations

from vmforge.device import Device, Prop
from vmforge.errors import VmforgeError
from vmforge.lazy import lazy_logger
from vmforge.memory import MmioOps
from vmforge.pci import regs
from vmforge.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from vmforge.pci.bus import PciBus

__all__ = ["PciBar", "PciDevice", "PciStateError", "parse_addr"]

log = lazy_logger("vmforge.pci")  # (logging imported by a message)

STATE_VERSION = 1
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1


class PciStateError(VmforgeError, ValueError):
    """A saved PCI record does not fit the function it is loaded into (nothing applied)."""


def parse_addr(text: str) -> tuple[int, int] | None:
    """QEMU's ``addr=SLOT[.FN]`` (hex): ``(slot, function)``, or None for ``""``."""
    text = str(text).strip()
    if not text:
        return None
    slot_text, _, fn_text = text.partition(".")
    try:
        slot = int(slot_text, 16)
        fn = int(fn_text, 16) if fn_text else 0
    except ValueError:
        raise ValueError(f"addr={text!r} is not SLOT[.FUNCTION] in hex") from None
    if not 0 <= slot < 32 or not 0 <= fn < 8:
        raise ValueError(f"addr={text!r}: slot must be 0..1f and function 0..7")
    return slot, fn


class PciBar(Record):
    """One base address register: its size, type bits and the ops behind it."""

    __slots__ = __match_args__ = ("index", "size", "type_bits", "ops", "name", "mapped_at")
    index: int
    size: int
    #: the low bits as they read back: I/O (1), or memory with 64-bit (4) and prefetch (8)
    type_bits: int
    ops: MmioOps
    name: str
    #: where the region is mapped in the bus's space now (None: not mapped)
    mapped_at: int | None

    def __init__(self, index: int, size: int, type_bits: int, ops: MmioOps, name: str,
                 mapped_at: int | None = None) -> None:
        self.index = index
        self.size = size
        self.type_bits = type_bits
        self.ops = ops
        self.name = name
        self.mapped_at = mapped_at

    @property
    def is_io(self) -> bool:
        return bool(self.type_bits & regs.BASE_ADDRESS_SPACE_IO)

    @property
    def is_64(self) -> bool:
        return not self.is_io and bool(self.type_bits & regs.BASE_ADDRESS_MEM_TYPE_64)


def _set(buf: bytearray, offset: int, size: int, value: int) -> None:
    buf[offset:offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def _get(buf: bytearray | bytes, offset: int, size: int) -> int:
    return int.from_bytes(buf[offset:offset + size], "little")


class PciDevice(Device):
    """A PCI function (type 0 header)."""

    # identity: class attributes, or instance attributes set before ``_init_header``
    vendor_id: int = 0xFFFF
    device_id: int = 0xFFFF
    revision: int = 0
    #: class << 8 | subclass
    class_code: int = regs.CLASS_OTHERS
    prog_if: int = 0
    #: None: QEMU's default subsystem (Red Hat / QEMU, 1af4:1100)
    subsystem_vendor_id: int | None = None
    subsystem_id: int | None = None
    #: INTx pin the function uses: 1 (INTA) .. 4 (INTD), 0 for none
    interrupt_pin: int = 0
    #: PCI Express function: 4 KiB of configuration space instead of 256 bytes
    is_express: ClassVar[bool] = False

    addr = Prop(str, "", "slot[.function] on the bus, in hex (QEMU's addr=)")
    multifunction = Prop(bool, False, "set the multi-function bit of the header type")

    def __init__(self, **props: Any) -> None:
        super().__init__(**props)
        parse_addr(self.addr)  # refuse a malformed addr= when the device is made
        self.bus: PciBus | None = None
        self.devfn: int | None = None
        self.config = bytearray(regs.EXP_CONFIG_SPACE_SIZE)
        self.wmask = bytearray(regs.EXP_CONFIG_SPACE_SIZE)
        self.w1cmask = bytearray(regs.EXP_CONFIG_SPACE_SIZE)
        self.cmask = bytearray(regs.EXP_CONFIG_SPACE_SIZE)
        self._cap_used = bytearray(regs.CONFIG_SPACE_SIZE)
        self.bars: list[PciBar | None] = [None] * regs.NUM_BARS
        self.intx_level = False  # the pin's level as the device drives it
        self._intx_routed = False  # what the bus has been told
        self._config_hooks: list[Any] = []
        #: the MSI-X capability (:class:`vmforge.pci.msix.Msix` sets it)
        self.msix: Any = None
        self._init_header()

    # -- building the header (QEMU's do_pci_register_device) ---------------------------

    @property
    def config_size(self) -> int:
        return regs.EXP_CONFIG_SPACE_SIZE if self.is_express else regs.CONFIG_SPACE_SIZE

    def _init_header(self) -> None:
        c = self.config
        _set(c, regs.VENDOR_ID, 2, self.vendor_id)
        _set(c, regs.DEVICE_ID, 2, self.device_id)
        c[regs.REVISION_ID] = self.revision & 0xFF
        c[regs.CLASS_PROG] = self.prog_if & 0xFF
        _set(c, regs.CLASS_DEVICE, 2, self.class_code)
        c[regs.HEADER_TYPE] = regs.HEADER_TYPE_NORMAL | (
            regs.HEADER_TYPE_MULTI_FUNCTION if self.multifunction else 0)
        sub_vendor = self.subsystem_vendor_id
        sub_id = self.subsystem_id
        _set(c, regs.SUBSYSTEM_VENDOR_ID, 2,
             regs.SUBVENDOR_ID_REDHAT_QUMRANET if sub_vendor is None else sub_vendor)
        _set(c, regs.SUBSYSTEM_ID, 2, regs.SUBDEVICE_ID_QEMU if sub_id is None else sub_id)
        c[regs.INTERRUPT_PIN] = self.interrupt_pin & 0xFF
        # writable: command bits, cache line, interrupt line, the device-specific area
        w = self.wmask
        _set(w, regs.COMMAND, 2, regs.COMMAND_IO | regs.COMMAND_MEMORY | regs.COMMAND_MASTER
             | regs.COMMAND_INTX_DISABLE | regs.COMMAND_SERR)
        w[regs.CACHE_LINE_SIZE] = 0xFF
        w[regs.INTERRUPT_LINE] = 0xFF
        w[regs.HEADER_SIZE:self.config_size] = b"\xff" * (self.config_size - regs.HEADER_SIZE)
        _set(self.w1cmask, regs.STATUS, 2, regs.STATUS_W1C)
        # what a state load must find unchanged (QEMU's pci_init_cmask)
        m = self.cmask
        for off, size in ((regs.VENDOR_ID, 2), (regs.DEVICE_ID, 2), (regs.REVISION_ID, 1),
                          (regs.CLASS_PROG, 1), (regs.CLASS_DEVICE, 2), (regs.HEADER_TYPE, 1)):
            m[off:off + size] = b"\xff" * size
        _set(m, regs.STATUS, 2, regs.STATUS_CAP_LIST)

    def register_bar(self, index: int, size: int, type_bits: int, ops: MmioOps,
                     name: str | None = None) -> PciBar:
        """Declare BAR ``index``: ``size`` bytes (a power of two; at least 4 for I/O,
        16 for memory), the type bits (``regs.BASE_ADDRESS_*``), the MMIO ops behind it.
        A 64-bit BAR also takes ``index + 1``."""
        is_io = bool(type_bits & regs.BASE_ADDRESS_SPACE_IO)
        is_64 = not is_io and bool(type_bits & regs.BASE_ADDRESS_MEM_TYPE_64)
        if not 0 <= index < regs.NUM_BARS - (1 if is_64 else 0):
            raise ValueError(f"{self.name}: BAR {index} out of range")
        if size <= 0 or size & (size - 1) or size < (4 if is_io else 16):
            raise ValueError(f"{self.name}: BAR {index} size {size:#x} is not a power of two "
                             "of at least 4 (I/O) or 16 (memory) bytes")
        for i in (index, index + 1) if is_64 else (index,):
            if self.bars[i] is not None or (i > 0 and (b := self.bars[i - 1]) and b.is_64):
                raise ValueError(f"{self.name}: BAR {i} is already in use")
        type_bits &= 0x1 if is_io else 0xF
        bar = PciBar(index, size, type_bits, ops, name or f"{self.name}-bar{index}")
        self.bars[index] = bar
        off = regs.bar_offset(index)
        wmask = ~(size - 1) & _U64
        if is_64:
            _set(self.config, off, 8, type_bits)
            _set(self.wmask, off, 8, wmask)
            _set(self.cmask, off, 8, _U64)
        else:
            _set(self.config, off, 4, type_bits)
            _set(self.wmask, off, 4, wmask & _U32)
            _set(self.cmask, off, 4, _U32)
        return bar

    # -- capabilities ---------------------------------------------------------------------

    def add_capability(self, cap_id: int, size: int, offset: int | None = None) -> int:
        """Add a capability of ``size`` bytes at ``offset`` (default: the first free
        space above the header, as QEMU's ``pci_add_capability``); it goes at the head
        of the list.  Its bytes are read-only until the caller opens some (``wmask``)."""
        if size < 2:
            raise ValueError("a capability holds at least its id and next pointer")
        if offset is None:
            offset = self._find_space(size)
        if offset < regs.HEADER_SIZE or offset + size > regs.CONFIG_SPACE_SIZE or offset & 3:
            raise ValueError(f"{self.name}: no room for a {size}-byte capability at {offset:#x}")
        if any(self._cap_used[offset:offset + size]):
            raise ValueError(f"{self.name}: capability at {offset:#x} overlaps another")
        c = self.config
        c[offset] = cap_id
        c[offset + 1] = c[regs.CAPABILITY_LIST]
        c[regs.CAPABILITY_LIST] = offset
        _set(c, regs.STATUS, 2, _get(c, regs.STATUS, 2) | regs.STATUS_CAP_LIST)
        self._cap_used[offset:offset + size] = b"\x01" * size
        self.wmask[offset:offset + size] = bytes(size)
        self.cmask[offset:offset + size] = b"\xff" * size
        return offset

    def _find_space(self, size: int) -> int:
        run = 0
        for off in range(regs.HEADER_SIZE, regs.CONFIG_SPACE_SIZE):
            run = 0 if self._cap_used[off] else run + 1
            if run == size:
                return off - size + 1
        raise ValueError(f"{self.name}: no room for a {size}-byte capability")

    def capabilities(self) -> list[tuple[int, int]]:
        """``(offset, id)`` of each capability, in list order (a bounded walk)."""
        out: list[tuple[int, int]] = []
        off = self.config[regs.CAPABILITY_LIST] & ~3
        while off and len(out) < 48:
            out.append((off, self.config[off]))
            off = self.config[off + 1] & ~3
        return out

    def find_capability(self, cap_id: int) -> int | None:
        for off, cid in self.capabilities():
            if cid == cap_id:
                return off
        return None

    def on_config_write(self, hook: Any) -> None:
        """Call ``hook(addr, size)`` after every configuration write (capabilities)."""
        self._config_hooks.append(hook)

    # -- configuration space access (the host bridge calls these) ---------------------------

    def config_read(self, addr: int, size: int) -> int:
        """``size`` bytes at ``addr``; all-ones past the configuration space."""
        limit = self.config_size
        if addr >= limit or addr < 0:
            return (1 << (8 * size)) - 1
        size = min(size, limit - addr)
        return _get(self.config, addr, size)

    def config_write(self, addr: int, size: int, value: int) -> None:
        """A write through the masks, then its side effects (BARs, INTx, capabilities)."""
        limit = self.config_size
        if addr < 0 or addr >= limit:
            return
        size = min(size, limit - addr)
        was_disabled = self.intx_disabled
        c, w, w1c = self.config, self.wmask, self.w1cmask
        for i in range(size):
            byte = value >> (8 * i) & 0xFF
            a = addr + i
            c[a] = (c[a] & ~w[a] | byte & w[a]) & ~(byte & w1c[a])
        end = addr + size
        if (addr < regs.bar_offset(regs.NUM_BARS) and end > regs.BASE_ADDRESS_0) or (
                addr <= regs.COMMAND < end):
            self.update_mappings()
        if addr <= regs.COMMAND + 1 < end and was_disabled != self.intx_disabled:
            self._route_intx()
        for hook in self._config_hooks:
            hook(addr, size)

    @property
    def command(self) -> int:
        return _get(self.config, regs.COMMAND, 2)

    @property
    def status(self) -> int:
        return _get(self.config, regs.STATUS, 2)

    # -- BAR decoding and mapping ---------------------------------------------------------

    def bar_address(self, index: int) -> int | None:
        """Where BAR ``index`` decodes now, or None (QEMU's ``pci_bar_address``)."""
        bar = self.bars[index]
        if bar is None:
            return None
        cmd = self.command
        off = regs.bar_offset(index)
        if bar.is_io:
            if not cmd & regs.COMMAND_IO:
                return None
            base = _get(self.config, off, 4) & ~(bar.size - 1)
            last = base + bar.size - 1
            if base == 0 or last >= _U32:
                return None
            return base
        if not cmd & regs.COMMAND_MEMORY:
            return None
        base = _get(self.config, off, 8 if bar.is_64 else 4) & ~(bar.size - 1) & _U64
        last = base + bar.size - 1
        if base == 0 or last >= _U64 or (not bar.is_64 and last >= _U32):
            return None
        return base

    def update_mappings(self) -> None:
        """Map or unmap the BAR regions to match Command and the BARs (the bus
        re-tries every function, so a region that overlapped another gets its turn)."""
        if self.bus is not None:
            self.bus.update_mappings()

    def _unmap_stale(self) -> None:
        if self.bus is None:
            return
        for i, bar in enumerate(self.bars):
            if bar is not None and bar.mapped_at is not None and bar.mapped_at != \
                    self.bar_address(i):
                space = self.bus.io_space if bar.is_io else self.bus.mem_space
                space.remove_mmio(bar.mapped_at)
                bar.mapped_at = None

    def _map_pending(self) -> None:
        if self.bus is None:
            return
        for i, bar in enumerate(self.bars):
            if bar is None or bar.mapped_at is not None:
                continue
            base = self.bar_address(i)
            if base is None:
                continue
            space = self.bus.io_space if bar.is_io else self.bus.mem_space
            try:
                space.add_mmio(base, bar.ops, bar.size, bar.name)
            except ValueError as exc:
                log.warning("%s: BAR %d at %#x not mapped: %s", self.name, i, base, exc)
                continue
            bar.mapped_at = base

    def unmap_all(self) -> None:
        """Take every BAR region out of the bus's spaces (unplug)."""
        for bar in self.bars:
            if bar is not None and bar.mapped_at is not None and self.bus is not None:
                space = self.bus.io_space if bar.is_io else self.bus.mem_space
                space.remove_mmio(bar.mapped_at)
                bar.mapped_at = None

    # -- INTx ---------------------------------------------------------------------------

    @property
    def intx_disabled(self) -> bool:
        return bool(self.command & regs.COMMAND_INTX_DISABLE)

    def set_irq(self, level: bool) -> None:
        """Drive the function's INTx pin (QEMU's ``pci_set_irq``)."""
        level = bool(level)
        if level == self.intx_level:
            return
        self.intx_level = level
        status = self.status
        status = status | regs.STATUS_INTERRUPT if level else status & ~regs.STATUS_INTERRUPT
        _set(self.config, regs.STATUS, 2, status)
        self._route_intx()

    def _route_intx(self) -> None:
        want = self.intx_level and not self.intx_disabled and self.interrupt_pin != 0
        if want != self._intx_routed:
            self._intx_routed = want
            if self.bus is not None and self.devfn is not None:
                self.bus.change_irq_level(self.devfn, self.config[regs.INTERRUPT_PIN] - 1,
                                          1 if want else -1)

    # -- MSI ----------------------------------------------------------------------------

    def send_msi(self, address: int, data: int) -> None:
        """Deliver a message-signalled interrupt (a DMA write of ``data`` at ``address``)."""
        if self.bus is not None:
            self.bus.send_msi(self, address, data)

    # -- life cycle ---------------------------------------------------------------------

    def reset(self) -> None:
        """PCI reset (QEMU's ``pci_do_device_reset``): INTx low, the writable bits of
        Command/Status/Interrupt Line and Cache Line cleared, BARs back to their type
        bits (so unmapped), MSI-X disabled with every entry masked; subclasses reset
        their own state after this."""
        self.set_irq(False)
        c = self.config
        for off, size in ((regs.COMMAND, 2), (regs.STATUS, 2), (regs.INTERRUPT_LINE, 1)):
            clear = _get(self.wmask, off, size) | _get(self.w1cmask, off, size)
            _set(c, off, size, _get(c, off, size) & ~clear)
        c[regs.CACHE_LINE_SIZE] = 0
        for bar in self.bars:
            if bar is not None:
                _set(c, regs.bar_offset(bar.index), 8 if bar.is_64 else 4, bar.type_bits)
        self._route_intx()
        self.update_mappings()
        if self.msix is not None:
            self.msix.reset()

    # -- state ---------------------------------------------------------------------------

    def save_pci_state(self) -> dict[str, Any]:
        """The configuration space, the pin level and MSI-X, as plain values."""
        return {"type": "pci-function", "version": STATE_VERSION, "vendor": self.vendor_id,
                "config": bytes(self.config[:self.config_size]), "intx": self.intx_level,
                "msix": self.msix.save_state() if self.msix is not None else None}

    def check_pci_state(self, record: Any) -> None:
        """Raise :class:`PciStateError` unless ``record`` fits this function: the
        read-only bytes QEMU checks (identity, BAR types, capabilities) must match."""
        if not isinstance(record, dict) or record.get("type") != "pci-function":
            raise PciStateError(f"{self.name}: not a PCI function record")
        if record.get("version") != STATE_VERSION:
            raise PciStateError(f"{self.name}: PCI state version {record.get('version')!r}")
        config = record.get("config")
        if not isinstance(config, bytes | bytearray) or len(config) != self.config_size:
            raise PciStateError(f"{self.name}: config space is not {self.config_size} bytes")
        if type(record.get("intx")) is not bool:
            raise PciStateError(f"{self.name}: intx is not a bool")
        for i in range(self.config_size):
            fixed = self.cmask[i] & ~self.wmask[i] & ~self.w1cmask[i] & 0xFF
            if (config[i] ^ self.config[i]) & fixed:
                raise PciStateError(f"{self.name}: config byte {i:#x} is {config[i]:#04x}, "
                                    f"this device has {self.config[i]:#04x} (read-only bits)")
        if (record.get("msix") is None) != (self.msix is None):
            raise PciStateError(f"{self.name}: MSI-X presence differs")
        if self.msix is not None:
            self.msix.check_state(record["msix"])

    def apply_pci_state(self, record: dict[str, Any]) -> None:
        """Take a record :meth:`check_pci_state` accepted: config, MSI-X, mappings, INTx."""
        self.config[:self.config_size] = record["config"]
        if self.msix is not None:
            self.msix.apply_state(record["msix"])
        self.intx_level = record["intx"]
        self._route_intx()
        self.update_mappings()

    def save_state(self) -> dict[str, Any]:
        return self.save_pci_state()

    def load_state(self, record: dict[str, Any]) -> None:
        self.check_pci_state(record)
        self.apply_pci_state(record)

    def __repr__(self) -> str:
        where = "unplugged" if self.devfn is None else \
            f"{regs.slot_of(self.devfn):02x}.{regs.function_of(self.devfn)}"
        return f"<{type(self).__name__} {self.name} {self.vendor_id:04x}:{self.device_id:04x} " \
               f"at {where}>"

"""PCI-to-PCI bridges: the type 1 header and the secondary bus behind it (QEMU's
``pci_bridge.c``).

:class:`PciBridge` is a function with a type 1 header: primary, secondary and
subordinate bus numbers, the I/O, memory and prefetchable memory windows
(base/limit registers with QEMU's writable masks and reset values), Bridge
Control with its Secondary Bus Reset bit, and :attr:`PciBridge.secondary`, a
:class:`SecondaryBus` holding the functions behind it.

Configuration cycles: the host bridge finds the bus a cycle is for with
:func:`find_bus` (QEMU's ``pci_find_bus_nr``): bus 0 is the host's own, any
other number goes to the bridge whose secondary..subordinate range holds it,
down the tree; a number no bridge claims is a master abort (all-ones).

The functions behind a bridge decode their BARs in the host bridge's memory
and I/O spaces (the windows are registers the guest programs; they do not
filter accesses, so a guest that places BARs outside its bridge's windows
still reaches them -- Linux never does).  INTx goes up through the bridge as
QEMU's ``pci_change_irq_level``: the standard swizzle on the secondary bus,
then the bridge's own slot on its bus; MSIs go to the host bridge's handler.
"""

from __future__ import annotations

from vmforge.memory import AddressSpace
from vmforge.pci import regs
from vmforge.pci.bus import PciBus
from vmforge.pci.device import PciDevice, PciStateError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["PciBridge", "SecondaryBus", "find_bus"]

STATE_VERSION = 1

# -- the type 1 header (Linux's pci_regs.h names) -----------------------------------------
PRIMARY_BUS = 0x18
SECONDARY_BUS = 0x19
SUBORDINATE_BUS = 0x1A
SEC_LATENCY_TIMER = 0x1B
IO_BASE = 0x1C
IO_LIMIT = 0x1D
SEC_STATUS = 0x1E
MEMORY_BASE = 0x20
MEMORY_LIMIT = 0x22
PREF_MEMORY_BASE = 0x24
PREF_MEMORY_LIMIT = 0x26
PREF_BASE_UPPER32 = 0x28
PREF_LIMIT_UPPER32 = 0x2C
IO_BASE_UPPER16 = 0x30
IO_LIMIT_UPPER16 = 0x32
ROM_ADDRESS1 = 0x38
BRIDGE_CONTROL = 0x3E

HEADER_TYPE_BRIDGE = 0x01
CLASS_BRIDGE_PCI = 0x0604
IO_RANGE_TYPE_16 = 0x00
PREF_RANGE_TYPE_64 = 0x01
RANGE_MASK = 0xF0            # the address bits of the I/O base/limit bytes
MEM_RANGE_MASK = 0xFFF0      # ... of the memory and prefetchable base/limit words

BRIDGE_CTL_PARITY = 0x01
BRIDGE_CTL_SERR = 0x02
BRIDGE_CTL_ISA = 0x04
BRIDGE_CTL_VGA = 0x08
BRIDGE_CTL_VGA_16BIT = 0x10
BRIDGE_CTL_MASTER_ABORT = 0x20
BRIDGE_CTL_BUS_RESET = 0x40
BRIDGE_CTL_FAST_BACK = 0x80
BRIDGE_CTL_DISCARD = 0x100
BRIDGE_CTL_SEC_DISCARD = 0x200
BRIDGE_CTL_DISCARD_STATUS = 0x400
BRIDGE_CTL_DISCARD_SERR = 0x800
#: what the guest may write in Bridge Control (QEMU's pci_init_mask_bridge)
BRIDGE_CTL_WRITABLE = (BRIDGE_CTL_PARITY | BRIDGE_CTL_SERR | BRIDGE_CTL_ISA | BRIDGE_CTL_VGA
                       | BRIDGE_CTL_VGA_16BIT | BRIDGE_CTL_MASTER_ABORT | BRIDGE_CTL_BUS_RESET
                       | BRIDGE_CTL_FAST_BACK | BRIDGE_CTL_DISCARD | BRIDGE_CTL_SEC_DISCARD
                       | BRIDGE_CTL_DISCARD_SERR)


def _put(buf: bytearray, offset: int, size: int, value: int) -> None:
    buf[offset:offset + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def _get(buf: bytearray, offset: int, size: int) -> int:
    return int.from_bytes(buf[offset:offset + size], "little")


class SecondaryBus(PciBus):
    """The bus behind a :class:`PciBridge` (QEMU's ``sec_bus``)."""

    def __init__(self, bridge: PciBridge, name: str) -> None:
        self.bridge = bridge
        super().__init__(name)

    def _parent(self) -> PciBus | None:
        return self.bridge.bus

    # BARs decode in the host's spaces once the bridge is plugged (see the module doc)
    @property  # type: ignore[override]
    def mem_space(self) -> AddressSpace:
        parent = self._parent()
        return parent.mem_space if parent is not None else self._own_mem

    @mem_space.setter
    def mem_space(self, space: AddressSpace) -> None:
        self._own_mem = space

    @property  # type: ignore[override]
    def io_space(self) -> AddressSpace:
        parent = self._parent()
        return parent.io_space if parent is not None else self._own_io

    @io_space.setter
    def io_space(self, space: AddressSpace) -> None:
        self._own_io = space

    #: a slot's power controller turns the functions behind off: they answer no
    #: configuration cycle (QEMU's pci_set_power / has_power)
    powered = True

    def config_read(self, dfn: int, reg: int, size: int) -> int:
        if not self.powered:
            return (1 << (8 * size)) - 1
        return super().config_read(dfn, reg, size)

    def config_write(self, dfn: int, reg: int, size: int, value: int) -> None:
        if self.powered:
            super().config_write(dfn, reg, size, value)

    @property
    def number(self) -> int:
        """The bus number the guest gave it (the bridge's Secondary Bus Number)."""
        return self.bridge.config[SECONDARY_BUS]

    def change_irq_level(self, dfn: int, pin: int, change: int) -> None:
        """Swizzle onto the bridge's pins, then on up its bus (pci_change_irq_level)."""
        if not 0 <= pin < regs.NUM_PINS:
            return
        line = self.map_irq(dfn, pin)
        self.irq_count[line] += change
        parent, bridge_dfn = self._parent(), self.bridge.devfn
        if parent is not None and bridge_dfn is not None:
            parent.change_irq_level(bridge_dfn, line, change)

    def send_msi(self, device: PciDevice, address: int, data: int) -> None:
        parent = self._parent()
        if parent is not None:
            parent.send_msi(device, address, data)


def find_bus(root: PciBus, number: int) -> PciBus | None:
    """The bus numbered ``number`` below ``root`` (bus 0), by the bridges'
    secondary/subordinate registers (QEMU's ``pci_find_bus_nr``)."""
    if number == 0:
        return root
    bus = root
    for _ in range(256):            # a bounded walk: a guest may program loops
        for dev in bus.devices.values():
            if not isinstance(dev, PciBridge):
                continue
            sec, sub = dev.config[SECONDARY_BUS], dev.config[SUBORDINATE_BUS]
            if sec == number:
                return dev.secondary
            if sec < number <= sub:
                bus = dev.secondary
                break
        else:
            return None
    return None


class PciBridge(PciDevice):
    """A PCI-to-PCI bridge function (type 1 header) with its secondary bus."""

    name: ClassVar[str] = "pci-bridge-base"
    class_code = CLASS_BRIDGE_PCI

    def __init__(self, **props: Any) -> None:
        super().__init__(**props)
        #: named after the bridge's id= once it has one (QEMU: the bus takes the id)
        self.secondary = SecondaryBus(self, f"{self.name}-bus")

    # -- the header (QEMU's pci_bridge_initfn, pci_init_mask_bridge) ------------------------

    def _init_header(self) -> None:
        super()._init_header()
        c, w, w1c, m = self.config, self.wmask, self.w1cmask, self.cmask
        c[regs.HEADER_TYPE] = HEADER_TYPE_BRIDGE | (
            regs.HEADER_TYPE_MULTI_FUNCTION if self.multifunction else 0)
        # the type 0 fields the base class wrote (subsystem ids, Min_Gnt) are not in a bridge
        c[0x10:regs.HEADER_SIZE] = bytes(regs.HEADER_SIZE - 0x10)
        c[regs.INTERRUPT_PIN] = self.interrupt_pin & 0xFF
        w[0x10:regs.HEADER_SIZE] = bytes(regs.HEADER_SIZE - 0x10)
        w[regs.INTERRUPT_LINE] = 0xFF
        w[PRIMARY_BUS:PRIMARY_BUS + 4] = b"\xff" * 4
        w[IO_BASE] = w[IO_LIMIT] = RANGE_MASK
        for off in (MEMORY_BASE, MEMORY_LIMIT, PREF_MEMORY_BASE, PREF_MEMORY_LIMIT):
            _put(w, off, 2, MEM_RANGE_MASK)
        w[PREF_BASE_UPPER32:PREF_BASE_UPPER32 + 8] = b"\xff" * 8
        _put(w, BRIDGE_CONTROL, 2, BRIDGE_CTL_WRITABLE)
        _put(w1c, BRIDGE_CONTROL, 2, BRIDGE_CTL_DISCARD_STATUS)
        _put(w1c, SEC_STATUS, 2, regs.STATUS_W1C)
        c[IO_BASE] |= IO_RANGE_TYPE_16
        c[IO_LIMIT] |= IO_RANGE_TYPE_16
        for off in (PREF_MEMORY_BASE, PREF_MEMORY_LIMIT):
            _put(c, off, 2, _get(c, off, 2) | PREF_RANGE_TYPE_64)
            _put(m, off, 2, _get(m, off, 2) | 0x0F)
        m[IO_BASE] |= 0x0F
        m[IO_LIMIT] |= 0x0F

    # -- the bus behind --------------------------------------------------------------------

    def realize(self, machine: Any) -> None:
        super().realize(machine)
        self.secondary.realize(machine)

    def unrealize(self) -> None:
        self.secondary.unrealize()
        super().unrealize()

    def config_write(self, addr: int, size: int, value: int) -> None:
        """The write through the masks; a 0 -> 1 Secondary Bus Reset resets the bus."""
        old_ctl = _get(self.config, BRIDGE_CONTROL, 2)
        super().config_write(addr, size, value)
        new_ctl = _get(self.config, BRIDGE_CONTROL, 2)
        if ~old_ctl & new_ctl & BRIDGE_CTL_BUS_RESET:
            self.secondary.reset()

    def reset(self) -> None:
        """QEMU's pci_bridge_reset then pci_bridge_disable_base_limit; the bus behind
        is reset too (a system reset reaches every bus)."""
        super().reset()
        c = self.config
        c[PRIMARY_BUS:PRIMARY_BUS + 4] = bytes(4)
        c[IO_BASE] = c[IO_BASE] & 0x0F | RANGE_MASK             # base above limit: closed
        c[IO_LIMIT] &= 0x0F
        for base, limit in ((MEMORY_BASE, MEMORY_LIMIT), (PREF_MEMORY_BASE, PREF_MEMORY_LIMIT)):
            _put(c, base, 2, _get(c, base, 2) & 0x0F | MEM_RANGE_MASK)
            _put(c, limit, 2, _get(c, limit, 2) & 0x0F)
        c[PREF_BASE_UPPER32:PREF_BASE_UPPER32 + 8] = bytes(8)
        _put(c, BRIDGE_CONTROL, 2, 0)
        self.secondary.reset()

    # -- state -----------------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        return {"type": "pci-bridge", "version": STATE_VERSION, "pci": self.save_pci_state(),
                "secondary": self.secondary.save_state()}

    def check_state(self, record: Any) -> None:
        if not isinstance(record, dict) or record.get("type") != "pci-bridge":
            raise PciStateError(f"{self.name}: not a PCI bridge record")
        if record.get("version") != STATE_VERSION:
            raise PciStateError(f"{self.name}: bridge state version {record.get('version')!r}")
        self.check_pci_state(record.get("pci"))
        self.secondary.check_functions(record.get("secondary"))

    def load_state(self, record: dict[str, Any]) -> None:
        self.check_state(record)
        self.apply_pci_state(record["pci"])
        self.secondary.load_state(record["secondary"])

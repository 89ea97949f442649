"""A PCI bus: functions at (slot, function), its memory and I/O spaces, INTx routing.

:class:`PciBus` is bus 0 behind a host bridge (QEMU's ``PCIBus``).  It holds

- the functions, by ``devfn`` (``slot << 3 | function``);
- two :class:`~vmforge.memory.AddressSpace` objects, ``mem_space`` and
  ``io_space``, where the functions' BARs are mapped once decoding is on; the
  host bridge's windows forward CPU accesses into them;
- INTx routing: a function's pin is swizzled (``(pin + slot) % 4``, QEMU's
  ``pci_swizzle_map_irq_fn``) onto one of four :class:`~vmforge.irq.IrqLine`
  objects, ``irqs``, which the board wires to its interrupt controller; a
  line is high while any function drives it (a count per line, as QEMU);
- MSI delivery: ``msi_handler(address, data)``, given by the board (None:
  messages are dropped and counted, e.g. on a board whose interrupt
  controller takes no MSIs).
"""

from __future__ import annotations

from collections.abc import Callable

from vmforge.irq import IrqLine
from vmforge.lazy import lazy_logger
from vmforge.memory import AddressSpace, QuietUnassignedLog
from vmforge.pci import regs
from vmforge.pci.device import PciDevice, PciStateError, parse_addr

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MsiHandler", "PciBus"]

log = lazy_logger("vmforge.pci")  # (logging imported by a message)

#: ``handler(address, data)``: a function wrote ``data`` (32 bits) at ``address``
MsiHandler = Callable[[int, int], None]

STATE_VERSION = 1


class PciBus:
    """Bus 0 of a host bridge."""

    def __init__(self, name: str = "pci", msi_handler: MsiHandler | None = None) -> None:
        self.name = name
        self.mem_space = AddressSpace(name=f"{name}-memory")
        self.io_space = AddressSpace(name=f"{name}-io")
        for space in (self.mem_space, self.io_space):
            space.on_bad_access = QuietUnassignedLog(space.name)   # (a master abort)
        self.devices: dict[int, PciDevice] = {}
        self.irqs = [IrqLine(name=f"{name}-int{'abcd'[i]}") for i in range(regs.NUM_PINS)]
        self.irq_count = [0] * regs.NUM_PINS
        self.msi_handler = msi_handler
        self.msi_dropped = 0
        self.machine: Any = None

    # -- plugging -------------------------------------------------------------------------

    def plug(self, device: PciDevice, slot: int | None = None, function: int = 0) -> PciDevice:
        """Put ``device`` at ``slot.function`` (default: its ``addr=`` property, else
        the first free slot, as QEMU); realized at once if the bus already is."""
        if device.bus is not None:
            raise ValueError(f"{device.name} is already plugged")
        if slot is None:
            where = parse_addr(device.addr)
            if where is not None:
                slot, function = where
        if slot is None:
            free = [s for s in range(32) if regs.devfn(s, function) not in self.devices]
            if not free:
                raise ValueError(f"{self.name}: no free slot for {device.name}")
            slot = free[0]
        dfn = regs.devfn(slot, function)
        if dfn in self.devices:
            raise ValueError(f"{self.name}: slot {slot:02x}.{function} is taken by "
                             f"{self.devices[dfn].name}")
        device.bus, device.devfn = self, dfn
        self.devices[dfn] = device
        if self.machine is not None and not device.realized:
            device.realize(self.machine)
        device._route_intx()
        self.update_mappings()
        return device

    def unplug(self, device: PciDevice) -> None:
        """Take ``device`` off the bus: its BARs unmapped, its INTx released."""
        if device.bus is not self or device.devfn is None:
            raise ValueError(f"{device.name} is not on {self.name}")
        device.set_irq(False)
        device.unmap_all()
        del self.devices[device.devfn]
        device.bus = device.devfn = None
        self.update_mappings()

    def device_at(self, slot: int, function: int = 0) -> PciDevice | None:
        return self.devices.get(regs.devfn(slot, function))

    def realize(self, machine: Any) -> None:
        self.machine = machine
        for dev in list(self.devices.values()):
            if not dev.realized:
                dev.realize(machine)

    def unrealize(self) -> None:
        for dev in list(self.devices.values()):
            if dev.realized:
                dev.unrealize()
        self.machine = None

    def reset(self) -> None:
        for dev in list(self.devices.values()):
            dev.reset()

    # -- configuration cycles -----------------------------------------------------------------

    def config_read(self, dfn: int, reg: int, size: int) -> int:
        """A configuration read: all-ones where no function answers."""
        dev = self.devices.get(dfn)
        if dev is None:
            return (1 << (8 * size)) - 1
        return dev.config_read(reg, size)

    def config_write(self, dfn: int, reg: int, size: int, value: int) -> None:
        dev = self.devices.get(dfn)
        if dev is not None:
            dev.config_write(reg, size, value)

    # -- BAR mappings -------------------------------------------------------------------------

    def update_mappings(self) -> None:
        """Unmap every BAR that moved or stopped decoding, then map every one that
        should be mapped and is not (a region refused for an overlap is retried here)."""
        devices = list(self.devices.values())
        for dev in devices:
            dev._unmap_stale()
        for dev in devices:
            dev._map_pending()

    # -- interrupts -----------------------------------------------------------------------------

    @staticmethod
    def map_irq(dfn: int, pin: int) -> int:
        """The host line of ``pin`` (0 = INTA) of the function at ``dfn``."""
        return regs.swizzle(regs.slot_of(dfn), pin)

    def change_irq_level(self, dfn: int, pin: int, change: int) -> None:
        """A function's pin went up (+1) or down (-1)."""
        if not 0 <= pin < regs.NUM_PINS:
            return
        line = self.map_irq(dfn, pin)
        self.irq_count[line] += change
        if self.irq_count[line] < 0:  # cannot happen unless a device double-lowers
            log.error("%s: INT%s count went negative", self.name, "ABCD"[line])
            self.irq_count[line] = 0
        self.irqs[line].set(self.irq_count[line] != 0)

    def send_msi(self, device: PciDevice, address: int, data: int) -> None:
        handler = self.msi_handler
        if handler is None:
            self.msi_dropped += 1
            if self.msi_dropped == 1:
                log.warning("%s: %s sent an MSI (%#x <- %#x) but the board takes none; dropped",
                            self.name, device.name, address, data)
            return
        handler(address, data & 0xFFFFFFFF)

    # -- state --------------------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        """Each function's record by ``devfn``."""
        return {"type": "pci-bus", "version": STATE_VERSION,
                "functions": {dfn: dev.save_state() for dfn, dev in sorted(self.devices.items())}}

    def check_state(self, record: Any) -> dict[int, Any]:
        if not isinstance(record, dict) or record.get("type") != "pci-bus":
            raise PciStateError(f"{self.name}: not a PCI bus record")
        if record.get("version") != STATE_VERSION:
            raise PciStateError(f"{self.name}: bus state version {record.get('version')!r}")
        functions = record.get("functions")
        if not isinstance(functions, dict) or set(functions) != set(self.devices):
            raise PciStateError(f"{self.name}: the record's functions "
                                f"{sorted(functions) if isinstance(functions, dict) else '?'} "
                                f"are not this bus's {sorted(self.devices)}")
        return functions

    def load_state(self, record: dict[str, Any]) -> None:
        """Load every function's record.  A record whose function list differs is
        refused whole; then every function's record is checked (``check_state``
        where a function has one) before any is applied, and each function applies
        its own atomically."""
        functions = self.check_functions(record)
        for dfn, dev in sorted(self.devices.items()):
            dev.load_state(functions[dfn])

    def check_functions(self, record: Any) -> dict[int, Any]:
        """:meth:`check_state`, then every function's record checked; nothing applied."""
        functions = self.check_state(record)
        for dfn, dev in sorted(self.devices.items()):
            checker = getattr(dev, "check_state", None)
            if checker is not None:
                checker(functions[dfn])
            else:
                dev.check_pci_state(functions[dfn])
        return functions

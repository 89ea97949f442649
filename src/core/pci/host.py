"""The generic ECAM PCIe host bridge (QEMU's ``gpex-pcihost``), its windows and
its device-tree node.

A board places one :class:`GpexHost`: the ECAM window (``reg``), a 32-bit
MMIO window, an I/O port window and optionally a 64-bit MMIO window, each a
CPU address range that forwards into the bus's memory or I/O space, and
four INTx lines (``irqs``) for its interrupt controller.  QEMU 7.2's riscv64
``virt`` board, for example::

    host = GpexHost(ecam_size=0x1000_0000,
                    mmio=(0x4000_0000, 0x4000_0000),        # CPU = PCI address
                    pio=(0x0300_0000, 0x1_0000),            # PCI I/O 0..0xffff
                    high_mmio=(0x4_0000_0000, 0x4_0000_0000))
    machine.add_device(host, 0x3000_0000)                   # maps ECAM and windows
    for i, line in enumerate(host.irqs):                    # INTA..INTD
        line.connect(plic.set_irq, 0x20 + i)
    host.bus.plug(VirtioBlkPci(drive="disk.img"))           # slot 1, 2, ...

and :meth:`GpexHost.fdt_node` writes ``pci@30000000`` as that board does.

Function 00.0 is the host bridge's own ``gpex-root`` (1b36:0008, class
0600), as on QEMU.  ECAM: ``offset = bus << 20 | devfn << 12 | register``;
configuration cycles for other buses go through the bridges
(:func:`vmforge.pci.bridge.find_bus`); reads where no function answers (or of a
bus no bridge leads to) are all-ones, writes there are dropped.  Window reads where
no BAR decodes are all-ones too (QEMU's ``allow-unmapped-accesses``).
"""

from __future__ import annotations

from collections.abc import Callable

from vmforge._fast.mmio import MemTx
from vmforge.device import Device
from vmforge.fdt import DeviceTree, FdtNode, FdtPlacement, split_cells
from vmforge.memory import AddressSpace
from vmforge.pci import regs
from vmforge.pci.bridge import find_bus
from vmforge.pci.bus import MsiHandler, PciBus
from vmforge.pci.device import PciDevice

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["ECAM_BUS_SIZE", "GpexHost", "GpexRoot", "PciWindow"]

#: ECAM bytes per bus (QEMU's PCIE_MMCFG_SIZE_MIN)
ECAM_BUS_SIZE = 1 << 20
#: the phys.hi cell of a ``ranges`` entry: I/O, 32-bit memory, 64-bit memory
FDT_PCI_RANGE_IOPORT = 0x0100_0000
FDT_PCI_RANGE_MMIO = 0x0200_0000
FDT_PCI_RANGE_MMIO_64BIT = 0x0300_0000
#: cells of a PCI address and of an INTx specifier in the device tree
FDT_PCI_ADDR_CELLS = 3
FDT_PCI_INT_CELLS = 1

_UNASSIGNED = int(MemTx.MEMTX_UNASSIGNED)


class GpexRoot(PciDevice):
    """Function 00.0: the host bridge as the bus sees it (QEMU's ``gpex-root``)."""

    name: ClassVar[str] = "gpex-root"
    vendor_id = regs.VENDOR_ID_REDHAT
    device_id = regs.DEVICE_ID_REDHAT_PCIE_HOST
    class_code = regs.CLASS_BRIDGE_HOST


class PciWindow:
    """CPU addresses forwarded into a PCI space at ``pci_base`` (a QEMU alias)."""

    valid_sizes: ClassVar[tuple[int, int]] = (1, 8)
    impl_sizes: ClassVar[tuple[int, int]] = (1, 8)
    unaligned: ClassVar[bool] = True

    def __init__(self, space: AddressSpace, pci_base: int, size: int, name: str) -> None:
        self.space = space
        self.pci_base = pci_base
        self.mmio_size = size
        self.name = name

    def read(self, offset: int, size: int) -> int:
        value, tx = self.space.read_tx(self.pci_base + offset, size)
        if int(tx) == _UNASSIGNED:
            return (1 << (8 * size)) - 1
        return int(value)

    def write(self, offset: int, size: int, value: int) -> None:
        self.space.write(self.pci_base + offset, size, value)


class GpexHost(Device):
    """A generic ECAM host bridge with its bus 0."""

    name: ClassVar[str] = "gpex-pcihost"
    valid_sizes: ClassVar[tuple[int, int]] = (1, 4)
    impl_sizes: ClassVar[tuple[int, int]] = (1, 4)

    def __init__(self, *, ecam_size: int = 0x1000_0000, mmio: tuple[int, int] | None = None,
                 pio: tuple[int, int] | None = None, high_mmio: tuple[int, int] | None = None,
                 msi_handler: MsiHandler | None = None, msi_parent: int | None = None) -> None:
        """``mmio``/``high_mmio``: ``(base, size)`` of a memory window whose CPU and PCI
        addresses are equal; ``pio``: ``(cpu_base, size)`` of the I/O window, PCI I/O
        address 0 at ``cpu_base``.  ``msi_parent``: phandle for the device tree
        (None: no ``msi-parent``, as with the PLIC)."""
        super().__init__()
        if ecam_size <= 0 or ecam_size % ECAM_BUS_SIZE or ecam_size > 256 * ECAM_BUS_SIZE:
            raise ValueError(f"ECAM size {ecam_size:#x} is not 1..256 buses of 1 MiB")
        self.mmio_size = ecam_size  # type: ignore[misc]  # an instance value for map()
        self.ecam_size = ecam_size
        self.mmio, self.pio, self.high_mmio = mmio, pio, high_mmio
        self.msi_parent = msi_parent
        self.bus = PciBus("pcie.0", msi_handler)
        self.irqs = self.bus.irqs
        self.root = self.bus.plug(GpexRoot(), slot=0)
        self.windows: list[tuple[int, PciWindow]] = []
        if mmio is not None:
            self.windows.append((mmio[0], PciWindow(self.bus.mem_space, mmio[0], mmio[1],
                                                    "pcie-mmio")))
        if pio is not None:
            self.windows.append((pio[0], PciWindow(self.bus.io_space, 0, pio[1], "pcie-pio")))
        if high_mmio is not None:
            self.windows.append((high_mmio[0], PciWindow(self.bus.mem_space, high_mmio[0],
                                                         high_mmio[1], "pcie-mmio-high")))

    @property
    def msi_handler(self) -> MsiHandler | None:
        return self.bus.msi_handler

    @msi_handler.setter
    def msi_handler(self, handler: Callable[[int, int], None] | None) -> None:
        self.bus.msi_handler = handler

    @property
    def bus_count(self) -> int:
        return self.ecam_size // ECAM_BUS_SIZE

    # -- life cycle ------------------------------------------------------------------------

    def map(self, space: AddressSpace, base: int) -> None:
        """The ECAM window at ``base``, and every CPU window at its own address."""
        space.add_mmio(base, self, self.ecam_size, "pcie-ecam")
        self.base = base
        for cpu_base, window in self.windows:
            space.add_mmio(cpu_base, window, window.mmio_size, window.name)

    def realize(self, machine: Any) -> None:
        super().realize(machine)
        self.bus.realize(machine)

    def unrealize(self) -> None:
        self.bus.unrealize()
        super().unrealize()

    def reset(self) -> None:
        self.bus.reset()

    # -- ECAM ------------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        bus = find_bus(self.bus, offset >> 20)   # bus 0, or the one a bridge leads to
        if bus is None:
            return (1 << (8 * size)) - 1
        return bus.config_read(offset >> 12 & 0xFF, offset & 0xFFF, size)

    def write(self, offset: int, size: int, value: int) -> None:
        bus = find_bus(self.bus, offset >> 20)
        if bus is not None:
            bus.config_write(offset >> 12 & 0xFF, offset & 0xFFF, size, value)

    # -- state -----------------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        return self.bus.save_state()

    def check_state(self, record: Any) -> None:
        self.bus.check_functions(record)

    def load_state(self, record: dict[str, Any]) -> None:
        self.bus.load_state(record)

    # -- device tree -------------------------------------------------------------------------

    def fdt_node(self, tree: DeviceTree, parent: FdtNode, place: FdtPlacement) -> FdtNode:
        """``pci@ECAM`` as QEMU 7.2's riscv ``virt`` writes it (``create_fdt_pcie``).

        ``place``: the ECAM window; ``place.irqs``: the interrupt controller's
        sources of INTA..INTD and ``place.interrupt_parent`` its phandle (the
        interrupt-map then routes every slot's four pins with the swizzle).
        """
        node = parent.add(f"pci@{place.base:x}")
        node.set("#address-cells", FDT_PCI_ADDR_CELLS)
        node.set("#interrupt-cells", FDT_PCI_INT_CELLS)
        node.set("#size-cells", 2)
        node.set("compatible", "pci-host-ecam-generic")
        node.set("device_type", "pci")
        node.set("linux,pci-domain", 0)
        node.set("bus-range", [0, place.size // ECAM_BUS_SIZE - 1])
        node.set("dma-coherent", True)
        if self.msi_parent is not None:
            node.set("msi-parent", self.msi_parent)
        tree.reg(node, (place.base, place.size))
        ranges: list[int] = []
        if self.pio is not None:
            ranges += [FDT_PCI_RANGE_IOPORT, *split_cells(0, 2), *split_cells(self.pio[0], 2),
                       *split_cells(self.pio[1], 2)]
        for kind, window in ((FDT_PCI_RANGE_MMIO, self.mmio),
                             (FDT_PCI_RANGE_MMIO_64BIT, self.high_mmio)):
            if window is not None:
                ranges += [kind, *split_cells(window[0], 2), *split_cells(window[0], 2),
                           *split_cells(window[1], 2)]
        node.set("ranges", ranges)
        if place.irqs and place.interrupt_parent is not None:
            node.set("interrupt-map", self.interrupt_map(place.interrupt_parent, place.irqs))
            node.set("interrupt-map-mask", [0x1800, 0, 0, 0x7])
        return node

    @staticmethod
    def interrupt_map(phandle: int, sources: tuple[int, ...]) -> list[int]:
        """One entry per pin of slots 0..3 (the mask repeats it for the others):
        ``devfn << 8, 0, 0, pin, phandle, source of line (pin + slot) % 4``."""
        if len(sources) != regs.NUM_PINS:
            raise ValueError(f"the host bridge has {regs.NUM_PINS} INTx lines, "
                             f"not {len(sources)}")
        cells: list[int] = []
        for slot in range(regs.NUM_PINS):
            for pin in range(regs.NUM_PINS):
                cells += [regs.devfn(slot) << 8, 0, 0, pin + 1, phandle,
                          sources[regs.swizzle(slot, pin)]]
        return cells

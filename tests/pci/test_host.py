"""The ECAM host bridge: configuration addressing, INTx routing with the swizzle, MSI-X,
and its device-tree node against QEMU 7.2's ``virt``."""

from __future__ import annotations

import pytest
from pcikit import ECAM, ECAM_SIZE, PCIE_IRQ, Nic

from vmforge.fdt import DeviceTree, FdtPlacement, parse_dtb
from vmforge.pci import GpexHost, Msix, PciDevice, PciStateError, regs
from vmforge.pci.guest import Window, assign_bars, enumerate_bus


def test_ecam_offsets_select_bus_function_and_register(rig):
    nic = rig.bus.plug(Nic(), slot=5, function=2)
    assert nic.devfn == 5 << 3 | 2
    base = ECAM + (5 << 15 | 2 << 12)
    assert rig.space.read(base, 4) == 0x100E8086
    assert rig.space.read(base + regs.CLASS_DEVICE, 2) == regs.CLASS_NETWORK_ETHERNET
    assert rig.space.read(base + 2, 2) == 0x100E and rig.space.read(base + 1, 1) == 0x80
    rig.space.write(base + regs.INTERRUPT_LINE, 1, 0x2A)
    assert nic.config[regs.INTERRUPT_LINE] == 0x2A
    # nobody at 05.0, 06.2 or on bus 1: all-ones, writes dropped
    for off in (5 << 15, 6 << 15 | 2 << 12, 1 << 20 | 5 << 15 | 2 << 12):
        assert rig.space.read(ECAM + off, 4) == 0xFFFFFFFF
        assert rig.space.read(ECAM + off, 1) == 0xFF
        rig.space.write(ECAM + off + regs.INTERRUPT_LINE, 1, 0x11)
    assert nic.config[regs.INTERRUPT_LINE] == 0x2A
    assert rig.ecam.read(0, 0, 0) == 0x00081B36  # gpex-root at 00.0
    assert rig.ecam.read(0, 0, regs.REVISION_ID) == regs.CLASS_BRIDGE_HOST << 16
    assert rig.host.bus_count == 256


def test_enumeration_finds_the_plugged_functions(rig):
    rig.bus.plug(Nic())  # first free slot
    rig.bus.plug(Nic(addr="7"))
    rig.bus.plug(Nic(addr="7.3"))
    rig.bus.plug(Nic(addr="8.1"))  # function 1 without function 0 is not scanned
    with pytest.raises(ValueError, match="taken"):
        rig.bus.plug(Nic(addr="7"))
    assert enumerate_bus(rig.ecam) == [(0, 0, 0x1B36, 0x0008), (1, 0, 0x8086, 0x100E),
                                       (7, 0, 0x8086, 0x100E)]


def test_multifunction_devices_are_scanned_past_function_0(rig):
    rig.bus.plug(Nic(addr="3", multifunction=True))
    rig.bus.plug(Nic(addr="3.5"))
    assert [f[:2] for f in enumerate_bus(rig.ecam)] == [(0, 0), (3, 0), (3, 5)]


class Pin(PciDevice):
    name = "test-pin"
    vendor_id, device_id = 0x1234, 0x0003

    def __init__(self, pin: int) -> None:
        self.interrupt_pin = pin
        super().__init__()


def test_intx_swizzle_onto_the_four_host_lines(rig):
    seen = {}
    for slot in range(1, 9):
        for pin in range(1, 5):
            dev = rig.bus.plug(Pin(pin), slot=slot, function=pin - 1)
            dev.set_irq(True)
            up = sorted(n for n, level in rig.levels.items() if level)
            dev.set_irq(False)
            assert not any(rig.levels.values())
            seen[slot, pin] = up
    for (slot, pin), up in seen.items():
        assert up == [PCIE_IRQ + (pin - 1 + slot) % 4]


def test_intx_lines_are_shared_and_masked_by_interrupt_disable(rig):
    a = rig.bus.plug(Nic(), slot=1)  # INTA of slot 1 -> line 1
    b = rig.bus.plug(Nic(), slot=5)  # INTA of slot 5 -> line 1 too
    line = PCIE_IRQ + 1
    a.set_irq(True)
    b.set_irq(True)
    a.set_irq(False)
    assert rig.levels[line] is True  # b still holds it
    assert b.status & regs.STATUS_INTERRUPT and not a.status & regs.STATUS_INTERRUPT
    rig.ecam.write(5, 0, regs.COMMAND, 2, regs.COMMAND_INTX_DISABLE)
    assert rig.levels[line] is False
    assert b.status & regs.STATUS_INTERRUPT  # the status bit still shows the pin
    rig.ecam.write(5, 0, regs.COMMAND, 2, 0)
    assert rig.levels[line] is True
    rig.host.reset()
    assert rig.levels[line] is False and not b.status & regs.STATUS_INTERRUPT


class MsixDev(PciDevice):
    name = "test-msix"
    vendor_id, device_id = 0x1234, 0x0004
    interrupt_pin = 1

    def __init__(self, vectors: int = 3) -> None:
        super().__init__()
        self.msix = Msix.exclusive_bar(self, vectors, 2)


def _program(rig, slot, vector, address, data, masked):
    table = rig.dev_bars[2].address + 16 * vector
    rig.space.write(table, 4, address & 0xFFFFFFFF)
    rig.space.write(table + 4, 4, address >> 32)
    rig.space.write(table + 8, 4, data)
    rig.space.write(table + 12, 4, int(masked))


def test_msix_table_masks_pending_bits_and_delivery(msi_rig):
    rig = msi_rig
    dev = rig.bus.plug(MsixDev(), slot=2)
    cap = dev.find_capability(regs.CAP_ID_MSIX)
    assert rig.ecam.read(2, 0, cap) == 0x0002_0000 | regs.CAP_ID_MSIX  # 3 vectors
    assert rig.ecam.read(2, 0, cap + 4) == 2 and rig.ecam.read(2, 0, cap + 8) == 0x802
    rig.dev_bars = assign_bars(rig.ecam, 2, 0, **rig.windows())
    assert rig.dev_bars[2].size == 0x1000
    table, pba = rig.dev_bars[2].address, rig.dev_bars[2].address + 0x800
    assert rig.space.read(table + 12, 4) == 1  # entries start masked
    dev.set_irq(True)
    dev.msix.notify(1)  # MSI-X off: pending, nothing sent
    assert rig.messages == [] and rig.space.read(pba, 4) == 0b10
    _program(rig, 2, 1, 0xFEE0_1000, 0x41, masked=False)
    rig.ecam.write(2, 0, cap + 2, 2, regs.MSIX_FLAGS_ENABLE)
    # enabling lowers INTx and delivers what was pending on an unmasked vector
    assert not any(rig.levels.values())
    assert rig.messages == [(0xFEE0_1000, 0x41)] and rig.space.read(pba, 4) == 0
    dev.msix.notify(1)
    assert rig.messages[-1] == (0xFEE0_1000, 0x41)
    rig.ecam.write(2, 0, cap + 2, 2, regs.MSIX_FLAGS_ENABLE | regs.MSIX_FLAGS_MASKALL)
    dev.msix.notify(1)
    assert len(rig.messages) == 2 and rig.space.read(pba, 4) == 0b10
    rig.ecam.write(2, 0, cap + 2, 2, regs.MSIX_FLAGS_ENABLE)  # function unmasked: sent
    assert len(rig.messages) == 3 and rig.space.read(pba, 4) == 0
    _program(rig, 2, 0, 0x1_0000_2000, 0x7, masked=True)
    dev.msix.notify(0)
    assert len(rig.messages) == 3
    rig.space.write(table + 12, 4, 0)  # unmask vector 0: its pending message goes
    assert rig.messages[-1] == (0x1_0000_2000, 0x7)
    dev.msix.notify(7)  # no such vector: ignored
    assert len(rig.messages) == 4
    saved = rig.host.save_state()
    rig.host.reset()
    assert not dev.msix.enabled and not any(dev.msix.pba)
    assert rig.space.read(table, 4) == 0xFFFFFFFF  # the BAR went back to 0: unmapped
    rig.host.load_state(saved)
    assert dev.msix.enabled and dev.msix.message(0) == (0x1_0000_2000, 0x7)
    assert rig.space.read(table + 8, 4) == 0x7  # mapped again where it was
    dev.msix.notify(0)
    assert rig.messages[-1] == (0x1_0000_2000, 0x7)


def test_msi_without_a_handler_is_dropped_and_counted(rig):
    dev = rig.bus.plug(MsixDev(1), slot=3)
    dev.msix.table[12] = 0
    rig.ecam.write(3, 0, dev.msix.cap + 2, 2, regs.MSIX_FLAGS_ENABLE)
    dev.msix.notify(0)
    assert rig.bus.msi_dropped == 1


def test_bus_state_refuses_another_shape(rig):
    rig.bus.plug(Nic(), slot=1)
    saved = rig.host.save_state()
    rig.bus.plug(Nic(), slot=2)
    with pytest.raises(PciStateError, match="functions"):
        rig.host.load_state(saved)


def _virt_placement(host: GpexHost, tree: DeviceTree, plic_phandle: int) -> FdtPlacement:
    return FdtPlacement(ECAM, ECAM_SIZE, tuple(PCIE_IRQ + i for i in range(4)), plic_phandle)


def test_fdt_node_is_qemus(qemu, rig):
    theirs = parse_dtb(qemu.dumpdtb())
    their_node = theirs.node_at("/soc/pci@30000000")
    plic = next(n for n in theirs.root.walk() if n.name.startswith("plic@"))
    tree = DeviceTree()
    soc = tree.root.add("soc")
    soc.set("#address-cells", 2)
    soc.set("#size-cells", 2)
    node = rig.host.fdt_node(tree, soc, _virt_placement(rig.host, tree,
                                                       plic.get_int("phandle")))
    assert node.path == their_node.path
    assert node.props == their_node.props  # phandle included: the same PLIC phandle


def test_fdt_interrupt_map_agrees_with_the_bus_routing(rig):
    tree = DeviceTree()
    soc = tree.root.add("soc")
    node = rig.host.fdt_node(tree, soc, _virt_placement(rig.host, tree, 9))
    cells = node.get_cells("interrupt-map")
    mask = node.get_cells("interrupt-map-mask")
    entries = [cells[i:i + 6] for i in range(0, len(cells), 6)]
    for slot in range(32):
        for pin in range(1, 5):
            key = [(slot << 11) & mask[0], 0, 0, pin & mask[3]]
            [entry] = [e for e in entries if e[:4] == key]
            assert entry[4] == 9
            assert entry[5] == PCIE_IRQ + rig.bus.map_irq(slot << 3, pin - 1)


def test_windows_and_sizes_are_checked():
    with pytest.raises(ValueError, match="ECAM size"):
        GpexHost(ecam_size=0x1234)
    host = GpexHost(ecam_size=16 << 20)
    tree = DeviceTree()
    node = host.fdt_node(tree, tree.root, FdtPlacement(ECAM, 16 << 20))
    assert node.get_cells("bus-range") == [0, 15]
    assert node.get("interrupt-map") is None and node.get_cells("ranges") == []
    with pytest.raises(ValueError, match="4 INTx"):
        GpexHost.interrupt_map(1, (1, 2))


def test_a_window_in_front_of_a_bar_reaches_the_device(rig):
    nic = rig.bus.plug(Nic(), slot=1)
    bars = assign_bars(rig.ecam, 1, 0, mem=Window(0x4000_0000, 0x10_0000),
                       io=Window(0x100, 0x100))
    assert rig.space.read(bars[0].address + 0x10, 4) == 0x2010
    rig.space.write(0x0300_0000 + bars[1].address + 2, 2, 0x55)
    assert nic.io.writes == [(2, 2, 0x55)]

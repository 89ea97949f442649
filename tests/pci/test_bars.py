"""BARs: sizing as Linux probes it, mapping when Command enables decoding, moves,
overlaps, and the host bridge's windows in front of the bus spaces."""

from __future__ import annotations

import pytest
from pcikit import HIGH, MMIO, PIO, Regs

from vmforge.pci import PciDevice, regs
from vmforge.pci.guest import Window, assign_bars, size_bars


class Wide(PciDevice):
    """One BAR of each kind."""

    name = "test-wide"
    vendor_id, device_id = 0x1234, 0x0001

    def __init__(self, **props):
        super().__init__(**props)
        self.io, self.m32, self.m64 = Regs(0x100), Regs(0x200), Regs(0x300)
        self.register_bar(0, 0x100, regs.BASE_ADDRESS_SPACE_IO, self.io)
        self.register_bar(1, 0x1000, regs.BASE_ADDRESS_SPACE_MEMORY, self.m32)
        self.register_bar(2, 0x10_0000, regs.BASE_ADDRESS_MEM_TYPE_64
                          | regs.BASE_ADDRESS_MEM_PREFETCH, self.m64)


def test_linux_style_sizing_reads_back_the_mask(rig):
    rig.bus.plug(Wide(), slot=3)
    e = rig.ecam
    e.write(3, 0, regs.bar_offset(0), 4, 0xFFFFFFFF)
    assert e.read(3, 0, regs.bar_offset(0)) == 0xFFFFFF01  # ~(0x100 - 1) | I/O
    e.write(3, 0, regs.bar_offset(1), 4, 0xFFFFFFFF)
    assert e.read(3, 0, regs.bar_offset(1)) == 0xFFFFF000
    e.write(3, 0, regs.bar_offset(2), 4, 0xFFFFFFFF)
    e.write(3, 0, regs.bar_offset(3), 4, 0xFFFFFFFF)
    assert e.read(3, 0, regs.bar_offset(2)) == 0xFFF0000C  # 64-bit, prefetchable
    assert e.read(3, 0, regs.bar_offset(3)) == 0xFFFFFFFF
    assert e.read(3, 0, regs.bar_offset(4)) == 0  # no BAR: hard-wired to 0
    bars = size_bars(e, 3)
    assert [(b.index, b.size, b.io, b.is_64, b.prefetch) for b in bars] == [
        (0, 0x100, True, False, False), (1, 0x1000, False, False, False),
        (2, 0x10_0000, False, True, True)]
    # sizing restored what was there (here: the all-ones written above)
    assert e.read(3, 0, regs.bar_offset(1)) == 0xFFFFF000


def test_regions_map_only_while_decoding_is_on(rig):
    dev = rig.bus.plug(Wide(), slot=2)
    e = rig.ecam
    bars = assign_bars(e, 2, 0, enable=False, **rig.windows())
    assert bars[0].address == 0x1000 and bars[1].address == MMIO and bars[2].address == HIGH
    assert rig.bus.mem_space.regions() == [] and rig.bus.io_space.regions() == []
    assert rig.space.read(MMIO, 4) == 0xFFFFFFFF  # nothing decodes: all-ones
    e.write(2, 0, regs.COMMAND, 2, regs.COMMAND_MEMORY)
    assert [r.base for r in rig.bus.mem_space.regions()] == [MMIO, HIGH]
    assert rig.bus.io_space.regions() == []
    assert rig.space.read(MMIO + 8, 4) == 0x208  # through the 32-bit window
    assert rig.space.read(HIGH + 0x10, 8) == 0x310  # through the 64-bit window
    rig.space.write(MMIO + 4, 2, 0xBEEF)
    assert dev.m32.writes == [(4, 2, 0xBEEF)]
    e.write(2, 0, regs.COMMAND, 2, regs.COMMAND_MEMORY | regs.COMMAND_IO)
    assert [r.base for r in rig.bus.io_space.regions()] == [0x1000]
    assert rig.space.read(PIO + 0x1000 + 3, 1) == 0x03  # PIO window: I/O address 0 at PIO
    e.write(2, 0, regs.COMMAND, 2, 0)
    assert rig.bus.mem_space.regions() == [] and rig.bus.io_space.regions() == []
    assert rig.space.read(MMIO + 8, 4) == 0xFFFFFFFF


def test_moving_a_bar_remaps_it_and_address_zero_is_unmapped(rig):
    rig.bus.plug(Wide(), slot=2)
    e = rig.ecam
    e.write(2, 0, regs.COMMAND, 2, regs.COMMAND_MEMORY)
    assert rig.bus.mem_space.regions() == []  # every BAR still at 0
    e.write(2, 0, regs.bar_offset(1), 4, MMIO + 0x5000)
    assert [r.base for r in rig.bus.mem_space.regions()] == [MMIO + 0x5000]
    e.write(2, 0, regs.bar_offset(1), 4, MMIO + 0x7123)  # low bits are not writable
    assert e.read(2, 0, regs.bar_offset(1)) == MMIO + 0x7000
    assert [r.base for r in rig.bus.mem_space.regions()] == [MMIO + 0x7000]
    # a 64-bit BAR whose upper half puts it above 4 GiB
    e.write(2, 0, regs.bar_offset(2), 4, 0x0010_0000)
    e.write(2, 0, regs.bar_offset(3), 4, 0x5)
    assert [r.base for r in rig.bus.mem_space.regions()] == [MMIO + 0x7000, 0x5_0010_0000]
    e.write(2, 0, regs.bar_offset(1), 4, 0)
    assert [r.base for r in rig.bus.mem_space.regions()] == [0x5_0010_0000]


def test_overlapping_bars_the_second_waits_for_room(rig, caplog):
    a = rig.bus.plug(Wide(), slot=1)
    b = rig.bus.plug(Wide(), slot=2)
    e = rig.ecam
    for slot in (1, 2):
        e.write(slot, 0, regs.bar_offset(1), 4, MMIO)
        e.write(slot, 0, regs.COMMAND, 2, regs.COMMAND_MEMORY)
    assert a.bars[1].mapped_at == MMIO and b.bars[1].mapped_at is None
    assert "not mapped" in caplog.text
    assert rig.space.read(MMIO, 4) == 0x200
    e.write(1, 0, regs.bar_offset(1), 4, MMIO + 0x10000)  # a moves away: b gets its turn
    assert a.bars[1].mapped_at == MMIO + 0x10000 and b.bars[1].mapped_at == MMIO
    rig.space.write(MMIO, 4, 7)
    assert b.m32.writes == [(0, 4, 7)] and a.m32.writes == []


def test_reset_unmaps_and_unplug_releases(rig):
    dev = rig.bus.plug(Wide(), slot=4)
    assign_bars(rig.ecam, 4, 0, **rig.windows())
    assert len(rig.bus.mem_space.regions()) == 2 and len(rig.bus.io_space.regions()) == 1
    rig.host.reset()
    assert rig.bus.mem_space.regions() == [] and rig.bus.io_space.regions() == []
    assign_bars(rig.ecam, 4, 0, **rig.windows())
    rig.bus.unplug(dev)
    assert rig.bus.mem_space.regions() == [] and dev.bus is None
    assert rig.ecam.read(4, 0, 0) == 0xFFFFFFFF


@pytest.mark.parametrize("size", [0x10, 0x1000, 1 << 30])
def test_memory_bar_sizes(rig, size):
    class One(PciDevice):
        name = "test-one"
        vendor_id, device_id = 0x1234, 0x0002

        def __init__(self):
            super().__init__()
            self.register_bar(0, size, regs.BASE_ADDRESS_SPACE_MEMORY, Regs())

    rig.bus.plug(One(), slot=5)
    [bar] = size_bars(rig.ecam, 5)
    assert bar.size == size
    placed = assign_bars(rig.ecam, 5, 0, mem=Window(MMIO, 1 << 30))
    assert placed[0].address == MMIO  # aligned to its size

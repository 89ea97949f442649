"""MMIO decode, run on the compiled decoder and on the pure-Python reference."""

from __future__ import annotations

import logging

import pytest

from vmforge.memory import AddressSpace, MemTx
from vmforge.memory_ref import ReferenceAddressSpace


class Recorder:
    """A device that records accesses and returns a pattern."""

    def __init__(self, valid=(1, 8), impl=(1, 8), unaligned=False) -> None:
        self.valid_sizes, self.impl_sizes, self.unaligned = valid, impl, unaligned
        self.log: list[tuple] = []
        self.regs: dict[int, int] = {}

    def read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size))
        return self.regs.get(offset, 0x0807060504030201 >> 0) & ((1 << 8 * size) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))
        self.regs[offset] = value


class Boom:
    def read(self, offset: int, size: int) -> int:
        raise RuntimeError("device failed")

    def write(self, offset: int, size: int, value: int) -> None:
        raise RuntimeError("device failed on write")


@pytest.fixture(params=["compiled", "reference"])
def make_space(request):
    def make():
        return AddressSpace() if request.param == "compiled" else ReferenceAddressSpace()
    return make


def test_ram_access_all_sizes(make_space) -> None:
    s = make_space()
    s.add_ram(0x8000_0000, 0x1000)
    s.write(0x8000_0000, 8, 0x1122334455667788)
    assert s.read(0x8000_0000, 8) == 0x1122334455667788
    assert s.read(0x8000_0000, 4) == 0x55667788
    assert s.read(0x8000_0006, 2) == 0x1122
    assert s.read(0x8000_0003, 1) == 0x55
    s.write(0x8000_0001, 2, 0xabcdef)  # masked to two bytes
    assert s.read(0x8000_0000, 4) == 0x55cdef88


def test_unassigned_reads_zero_and_is_reported(make_space) -> None:
    s = make_space()
    seen = []
    s.on_bad_access = lambda *a: seen.append(a)
    assert s.read(0x1234, 4) == 0
    assert s.write(0x1234, 4, 7) == MemTx.MEMTX_UNASSIGNED
    assert s.read_tx(0x1234, 8) == (0, MemTx.MEMTX_UNASSIGNED)
    assert s.bad_accesses == 3
    assert seen[0] == (int(MemTx.MEMTX_UNASSIGNED), 0x1234, 4, False, 0)
    assert seen[1] == (int(MemTx.MEMTX_UNASSIGNED), 0x1234, 4, True, 7)


def test_device_gets_offsets_and_sizes(make_space) -> None:
    s = make_space()
    dev = Recorder()
    s.add_mmio(0x1000_0000, dev, 0x100, "rec")
    s.write(0x1000_0010, 4, 0xdeadbeef)
    assert s.read(0x1000_0010, 4) == 0xdeadbeef
    assert dev.log == [("w", 0x10, 4, 0xdeadbeef), ("r", 0x10, 4)]


def test_wide_access_is_split_little_endian(make_space) -> None:
    s = make_space()
    dev = Recorder(impl=(4, 4))
    dev.regs = {0: 0x11111111, 4: 0x22222222}
    s.add_mmio(0x2000, dev, 0x100)
    assert s.read(0x2000, 8) == 0x2222222211111111
    s.write(0x2008, 8, 0xAAAAAAAABBBBBBBB)
    assert dev.log[-2:] == [("w", 8, 4, 0xBBBBBBBB), ("w", 12, 4, 0xAAAAAAAA)]


def test_narrow_access_is_widened_and_aligned_down(make_space) -> None:
    s = make_space()
    dev = Recorder(impl=(4, 8))
    dev.regs = {4: 0x44332211}
    s.add_mmio(0x3000, dev, 0x100)
    assert s.read(0x3006, 1) == 0x33
    assert s.read(0x3006, 2) == 0x4433
    assert dev.log[-1] == ("r", 4, 4)
    s.write(0x3005, 1, 0x99)
    assert dev.log[-1] == ("w", 4, 4, 0x9900)


def test_invalid_sizes_and_alignment_refused(make_space) -> None:
    s = make_space()
    dev = Recorder(valid=(4, 4))
    s.add_mmio(0x4000, dev, 0x100)
    assert s.read_tx(0x4000, 1) == (0, MemTx.MEMTX_INVALID)
    assert s.read_tx(0x4000, 8) == (0, MemTx.MEMTX_INVALID)
    assert s.read_tx(0x4002, 4) == (0, MemTx.MEMTX_INVALID)  # unaligned
    assert s.write(0x40fe, 4, 1) == MemTx.MEMTX_INVALID
    assert dev.log == []
    s2 = make_space()
    dev2 = Recorder(unaligned=True)
    s2.add_mmio(0x4000, dev2, 0x100)
    assert s2.read_tx(0x4003, 4)[1] == MemTx.MEMTX_OK
    assert s2.read_tx(0x40fe, 4)[1] == MemTx.MEMTX_INVALID  # runs past the region


def test_device_exception_reaches_the_caller(make_space) -> None:
    s = make_space()
    s.add_mmio(0x5000, Boom(), 0x10)
    with pytest.raises(RuntimeError, match="device failed"):
        s.read(0x5000, 4)
    with pytest.raises(RuntimeError, match="on write"):
        s.write(0x5004, 4, 1)


def test_overlaps_refused_across_kinds(make_space) -> None:
    s = make_space()
    s.add_ram(0x8000_0000, 0x1000)
    s.add_mmio(0x1000, Recorder(), 0x100, "uart")
    with pytest.raises(ValueError, match="overlaps"):
        s.add_mmio(0x8000_0800, Recorder(), 0x1000, "bad")
    with pytest.raises(ValueError, match="overlaps"):
        s.add_ram(0x10ff, 0x10, "bad")
    s.add_mmio(0x1100, Recorder(), 0x100, "next")  # adjacent is fine
    assert [(r.kind, r.name) for r in s.regions()] == [
        ("mmio", "uart"), ("mmio", "next"), ("ram", "ram")]


def test_rom_writes_dropped(make_space) -> None:
    s = make_space()
    s.add_ram(0x1000, 0x1000, "rom", readonly=True)
    assert s.write(0x1000, 4, 0x1234) == MemTx.MEMTX_READONLY
    assert s.read(0x1000, 4) == 0


def test_access_straddling_ram_end_goes_bytewise(make_space) -> None:
    s = make_space()
    s.add_ram(0x1000, 0x1000)
    s.write(0x1ffe, 2, 0xbbaa)
    value, tx = s.read_tx(0x1ffe, 4)
    assert value == 0xbbaa and tx == MemTx.MEMTX_UNASSIGNED


def test_bad_sizes_refused(make_space) -> None:
    s = make_space()
    with pytest.raises(ValueError):
        s.read(0, 3)
    with pytest.raises(ValueError):
        s.add_mmio(0x1000, Recorder(impl=(8, 4)), 0x10)


def test_many_regions_decode_to_the_right_one(make_space) -> None:
    s = make_space()
    devs = [Recorder() for _ in range(40)]
    for i, d in enumerate(devs):
        s.add_mmio(0x1000_0000 + (39 - i) * 0x1000, d, 0x1000, f"d{i}")
    for i, d in enumerate(devs):
        s.write(0x1000_0000 + (39 - i) * 0x1000 + 8, 4, i)
        assert d.log == [("w", 8, 4, i)]


def test_unassigned_logging_is_rate_limited(caplog) -> None:
    s = AddressSpace(name="t")
    with caplog.at_level(logging.WARNING, logger="vmforge.memory"):
        for _ in range(1000):
            s.read(0xdead0000, 4)
    assert s.bad_accesses == 1000
    assert 1 <= len(caplog.records) <= 10
    assert "unassigned read of 4 bytes at 0xdead0000" in caplog.records[0].getMessage()

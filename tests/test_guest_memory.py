"""GuestMemory and GuestAddress: bounds, overflow, partial moves, zero-copy views."""

from __future__ import annotations

import mmap

import pytest

from vmforge.errors import GuestAddressError, GuestMemoryError
from vmforge.memory import GuestAddress, GuestMemory

TOP = (1 << 64) - 1


@pytest.fixture
def mem() -> GuestMemory:
    m = GuestMemory()
    m.add_ram(0x8000_0000, 0x10000, "low")
    m.add_ram(0x8001_0000, 0x1000, "adjacent")
    m.add_ram(0x9000_0000, 0x1000, "rom", readonly=True)
    return m


def test_guest_address_is_checked() -> None:
    a = GuestAddress(0x1000)
    assert a + 0x10 == 0x1010 and isinstance(a + 0x10, GuestAddress)
    assert GuestAddress(TOP) == TOP
    with pytest.raises(GuestAddressError):
        GuestAddress(TOP) + 1
    with pytest.raises(GuestAddressError):
        GuestAddress(0) - 1
    with pytest.raises(GuestAddressError):
        GuestAddress(-5)
    assert repr(GuestAddress(16)) == "GuestAddress(0x10)"


def test_regions_sorted_and_overlaps_refused(mem: GuestMemory) -> None:
    assert [r.name for r in mem.regions] == ["low", "adjacent", "rom"]
    with pytest.raises(ValueError, match="overlaps 'low'"):
        mem.add_ram(0x8000_f000, 0x2000, "clash")
    with pytest.raises(GuestAddressError):
        mem.add_ram(TOP - 10, 0x100, "wraps")
    with pytest.raises(ValueError):
        mem.add_ram(0x1000, 0, "empty")
    assert mem.region_at(0x8000_0010).name == "low"
    assert mem.region_at(0x7fff_ffff) is None


def test_read_write_across_adjacent_regions(mem: GuestMemory) -> None:
    data = bytes(range(256)) * 2
    mem.write(0x8000_ff00, data)  # crosses from "low" into "adjacent"
    assert mem.read(0x8000_ff00, len(data)) == data
    views = mem.views(0x8000_ff00, len(data))
    assert [v.nbytes for v in views] == [0x100, 0x100]
    assert b"".join(v.tobytes() for v in views) == data


def test_all_or_error_and_partial(mem: GuestMemory) -> None:
    end = 0x8001_1000  # first byte after "adjacent"
    with pytest.raises(GuestMemoryError) as info:
        mem.read(end - 4, 8)
    assert (info.value.expected, info.value.completed) == (8, 4)
    buf = bytearray(8)
    assert mem.read_partial(end - 4, buf) == 4
    mem.write(end - 4, b"abcd")
    assert mem.write_partial(end - 2, b"WXYZ") == 2
    assert mem.read(end - 4, 4) == b"abWX"
    # an all-or-error write that fails writes nothing
    with pytest.raises(GuestMemoryError) as info:
        mem.write(end - 4, b"12345678")
    assert (info.value.expected, info.value.completed) == (8, 4)
    assert mem.read(end - 4, 4) == b"abWX"
    with pytest.raises(GuestMemoryError):
        mem.read(0x1000, 1)
    with pytest.raises(GuestAddressError):
        mem.read(TOP, 2)


def test_rom_refuses_guest_writes_but_loads(mem: GuestMemory) -> None:
    with pytest.raises(GuestMemoryError) as info:
        mem.write(0x9000_0000, b"x")
    assert info.value.completed == 0, "ROM is RAM but not writable"
    assert mem.write_partial(0x9000_0000, b"x") == 0
    mem.load(0x9000_0000, b"firmware")
    assert mem.read(0x9000_0000, 8) == b"firmware"
    with pytest.raises(GuestMemoryError):
        mem.view(0x9000_0000, 4, writable=True)
    assert mem.view(0x9000_0000, 4, writable=False).tobytes() == b"firm"


def test_typed_accessors_little_endian(mem: GuestMemory) -> None:
    mem.write_u64(0x8000_0008, 0x1122334455667788)
    assert mem.read_u32(0x8000_0008) == 0x55667788
    assert mem.read_u16(0x8000_000e) == 0x1122
    assert mem.read_u8(0x8000_0009) == 0x77
    mem.write_u16(0x8000_0000, 0x1_ffff)  # truncated to the size
    assert mem.read_u16(0x8000_0000) == 0xffff


def test_view_is_zero_copy_and_bounded(mem: GuestMemory) -> None:
    v = mem.view(0x8000_0100, 16)
    v[:4] = b"ABCD"
    assert mem.read(0x8000_0100, 4) == b"ABCD"
    with pytest.raises(GuestMemoryError):
        mem.view(0x8000_fff0, 0x20)  # crosses a region boundary: use views()
    with pytest.raises(GuestMemoryError):
        mem.views(0x8001_0ff0, 0x20)  # runs into a hole


def test_mapped_buffer_cannot_be_closed_under_the_guest() -> None:
    m = GuestMemory()
    buf = mmap.mmap(-1, 4096)
    m.add_ram(0, 4096, buffer=buf)
    with pytest.raises(BufferError):
        buf.close()
    m.remove_ram(0)
    buf.close()


def test_check_range_and_checked_offset(mem: GuestMemory) -> None:
    assert mem.check_range(0x8000_0000, 0x11000)
    assert not mem.check_range(0x8000_0000, 0x11001)
    assert not mem.check_range(TOP, 2)
    assert mem.checked_offset(0x8000_0000, 0x10) == 0x8000_0010
    assert mem.checked_offset(0x8000_0000, 0x20000) is None
    assert mem.checked_offset(TOP, 1) is None

"""The e820 memory map: its encoding (struct boot_e820_entry) and initrd placement."""

from __future__ import annotations

import pytest

from vmforge.loader.e820 import (
    E820_ACPI,
    E820_NVS,
    E820_RAM,
    E820_RESERVED,
    E820Entry,
    e820_bytes,
    place_high,
)


def test_types_are_linux_e820_types() -> None:
    # arch/x86/include/asm/e820/types.h: E820_TYPE_RAM 1, RESERVED 2, ACPI 3, NVS 4
    assert (E820_RAM, E820_RESERVED, E820_ACPI, E820_NVS) == (1, 2, 3, 4)


def test_encoding_is_20_bytes_per_entry_addr_size_type() -> None:
    entries = [E820Entry(0, 0x9FC00, E820_RAM), E820Entry(0x9FC00, 0x400, E820_RESERVED),
               E820Entry(0x1_0000_0000, 0x1234_5678_9ABC, E820_RAM)]
    raw = e820_bytes(entries)
    assert len(raw) == 60
    # struct boot_e820_entry { __u64 addr; __u64 size; __u32 type; } __attribute__((packed))
    for i, e in enumerate(entries):
        rec = raw[20 * i:20 * i + 20]
        assert int.from_bytes(rec[0:8], "little") == e.addr
        assert int.from_bytes(rec[8:16], "little") == e.size
        assert int.from_bytes(rec[16:20], "little") == e.type
    assert raw[40:60] == bytes.fromhex("0000000001000000" "bc9a785634120000" "01000000")
    assert e820_bytes([]) == b""


@pytest.mark.parametrize(("size", "expected"), [
    (1, 0x1FFFF000),              # (0x1fffffff - 1) & ~4095
    (0x1000, 0x1FFFE000),         # QEMU leaves the last page alone: initrd_max is end - 1
    (0x12345, 0x1FFED000),
])
def test_place_high_is_qemus_rule(size: int, expected: int) -> None:
    ram = [E820Entry(0, 0x9FC00, E820_RAM), E820Entry(0x100000, 0x1FF00000, E820_RAM)]
    addr = place_high(ram, size, last_byte=0xFFFFFFFF)
    assert addr == expected == ((0x20000000 - 1) - size) & ~4095


def test_place_high_limits() -> None:
    ram = [E820Entry(0, 0x9FC00, E820_RAM), E820Entry(0x9FC00, 0x60400, E820_RESERVED),
           E820Entry(0x100000, 0x300000, E820_RAM), E820Entry(0x1_0000_0000, 1 << 30, E820_RAM)]
    # last_byte caps it (the initrd_addr_max of a kernel, 4 GiB for PVH)
    assert place_high(ram, 0x1000, last_byte=(1 << 64) - 1) == 0x1_0000_0000 + (1 << 30) - 0x2000
    assert place_high(ram, 0x1000, last_byte=0xFFFFFFFF) == 0x3FE000
    assert place_high(ram, 0x1000, last_byte=0x37FFFFFF) == 0x3FE000
    assert place_high(ram, 0x1000, last_byte=0x2FFFFF) == 0x2FE000
    # not below `above`, never in a reserved range: falls back to the low RAM range
    assert place_high(ram, 0x1000, last_byte=0x3FFFFF, above=0x3FF000) is None
    assert place_high(ram, 0x1000, last_byte=0xFFFFF) == 0x9E000
    assert place_high(ram, 0x400000, last_byte=0xFFFFFFFF - (1 << 31)) is None

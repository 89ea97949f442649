"""The x86 memory map a loader hands to the guest (BIOS "e820" entries).

The same entries go into the Linux zero page (``struct boot_e820_entry``,
arch/x86/include/uapi/asm/bootparam.h: u64 addr, u64 size, u32 type, packed: 20
bytes) and, widened to 24 bytes, into the PVH memory map
(``struct hvm_memmap_table_entry``, see :mod:`vmforge.loader.pvh`).  The types
are the ACPI address range types Linux names ``E820_TYPE_*``
(arch/x86/include/asm/e820/types.h).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["E820_ACPI", "E820_NVS", "E820_RAM", "E820_RESERVED", "E820Entry", "e820_bytes",
           "place_high"]

E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3
E820_NVS = 4

#: ``struct boot_e820_entry``: addr, size, type, packed
_ENTRY = struct.Struct("<QQI")


@dataclass(frozen=True)
class E820Entry:
    """One range of the memory map: ``size`` bytes at ``addr`` of ``type``."""

    addr: int
    size: int
    type: int

    @property
    def end(self) -> int:
        return self.addr + self.size


def e820_bytes(entries: Iterable[E820Entry]) -> bytes:
    """The entries as the zero page's ``e820_table`` holds them: 20 bytes each."""
    return b"".join(_ENTRY.pack(e.addr, e.size, e.type) for e in entries)


def place_high(entries: Sequence[E820Entry], size: int, *, last_byte: int, above: int = 0,
               align: int = 4096) -> int | None:
    """Where QEMU puts an initrd: ``(top - size) & ~(align - 1)`` with ``top`` the
    lower of ``last_byte`` and the last byte of a RAM range (hw/i386/x86.c,
    x86_load_linux: ``initrd_addr = (initrd_max - initrd_size) & ~4095`` with
    ``initrd_max`` capped at ``below_4g_mem_size - 1``), tried in the highest RAM
    range first.  The result lies inside that RAM range and at or above ``above``;
    None when no RAM range can hold ``size`` bytes there."""
    for e in sorted((e for e in entries if e.type == E820_RAM), key=lambda e: -e.addr):
        top = min(last_byte, e.end - 1)
        if top < size:
            continue
        addr = (top - size) & ~(align - 1)
        if addr >= max(e.addr, above):
            return addr
    return None

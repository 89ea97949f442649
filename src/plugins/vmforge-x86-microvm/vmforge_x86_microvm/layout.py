"""The microvm board's address map and interrupt numbers (QEMU 7.2's
``hw/i386/microvm.c`` with ``acpi=off``), and where the boot structures go.
"""

from __future__ import annotations

from vmforge.loader.e820 import E820_NVS, E820_RAM, E820_RESERVED, E820Entry

__all__ = [
    "BOOT_PARAMS", "BOOT_STACK", "CMDLINE", "GDT", "HIGH_RAM_BASE",
    "IOAPIC_ADDR", "KERNEL_LOAD", "KVM_IDENTITY_MAP", "KVM_TSS", "LAPIC_ADDR",
    "LOW_RAM_MAX", "MPTABLE", "PAGE_TABLES",
    "PVH_START_INFO", "UART_IRQ", "UART_PORT", "VIRTIO_COUNT", "VIRTIO_IRQ_BASE",
    "VIRTIO_MMIO_BASE", "VIRTIO_MMIO_SIZE", "e820_map", "ram_ranges",
]

#: RAM below the 32-bit hole (QEMU's microvm: ``lowmem = 0xc0000000``); the rest at 4 GiB
LOW_RAM_MAX = 0xC000_0000
HIGH_RAM_BASE = 1 << 32

UART_PORT = 0x3F8
UART_IRQ = 4
#: QEMU's ``VIRTIO_MMIO_BASE``; 8 transports of 512 bytes on IRQ 5.. without ACPI
VIRTIO_MMIO_BASE = 0xFEB0_0000
VIRTIO_MMIO_SIZE = 512
VIRTIO_COUNT = 8
VIRTIO_IRQ_BASE = 5
IOAPIC_ADDR = 0xFEC0_0000
LAPIC_ADDR = 0xFEE0_0000
#: KVM's identity-map page and TSS (3 pages) where QEMU puts them, reserved in e820
KVM_IDENTITY_MAP = 0xFEFF_C000
KVM_TSS = 0xFEFF_D000

# where vmforge puts the boot structures (low memory, below the EBDA)
GDT = 0x500
PVH_START_INFO = 0x6000
BOOT_PARAMS = 0x7000
BOOT_STACK = 0x8FF0
PAGE_TABLES = 0x9000            # 3 pages: PML4, PDPT, PD
CMDLINE = 0x20000
#: the MP table, where QEMU's firmware (qboot) puts it: the start of the EBDA
MPTABLE = 0x9FC00
KERNEL_LOAD = 0x100000


def ram_ranges(size: int) -> list[tuple[int, int]]:
    """(base, size) of the RAM regions for ``size`` bytes of guest RAM."""
    low = min(size, LOW_RAM_MAX)
    out = [(0, low)]
    if size > low:
        out.append((HIGH_RAM_BASE, size - low))
    return out


def e820_map(size: int) -> list[E820Entry]:
    """The memory map the guest is given, as QEMU's microvm firmware (qboot) makes it
    with ``acpi=off``: RAM up to the EBDA, the EBDA (1 KiB) reserved, 0xd0000-0xf0000
    ACPI NVS (qboot's tables), the BIOS area reserved, RAM from 1 MiB, KVM's pages
    reserved, RAM above 4 GiB.  (Linux adds the ISA hole itself: it prints
    0x9fc00-0xcffff reserved, as under QEMU.)"""
    low = min(size, LOW_RAM_MAX)
    out = [E820Entry(0, MPTABLE, E820_RAM),
           E820Entry(MPTABLE, 0xA0000 - MPTABLE, E820_RESERVED),
           E820Entry(0xD0000, 0x20000, E820_NVS),
           E820Entry(0xF0000, 0x10000, E820_RESERVED)]
    if low > KERNEL_LOAD:
        out.append(E820Entry(KERNEL_LOAD, low - KERNEL_LOAD, E820_RAM))
    out.append(E820Entry(KVM_IDENTITY_MAP, 0x4000, E820_RESERVED))
    if size > low:
        out.append(E820Entry(HIGH_RAM_BASE, size - low, E820_RAM))
    return out

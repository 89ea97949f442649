"""The riscv64 ``virt`` board's address map and interrupt numbers (QEMU 7.2's).

Only what the devices of this distribution and a future ``riscv-virt``
machine need: where each device sits, which PLIC source it raises, and the
numbers the device tree and the reset ROM use.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

__all__ = [
    "MEMMAP",
    "HartIrqInputs",
    "MemMapEntry",
    "fdt_load_addr",
    "initrd_start",
]


@runtime_checkable
class HartIrqInputs(Protocol):
    """What the PLIC and CLINT need of a hart: drive one ``mip`` bit."""

    def set_irq_line(self, bit: int, level: bool) -> None: ...


class MemMapEntry(NamedTuple):
    base: int
    size: int


#: QEMU 7.2 ``virt_memmap`` (the parts vmforge models)
MEMMAP: dict[str, MemMapEntry] = {
    "mrom": MemMapEntry(0x1000, 0xF000),
    "test": MemMapEntry(0x100000, 0x1000),
    "rtc": MemMapEntry(0x101000, 0x1000),
    "clint": MemMapEntry(0x2000000, 0x10000),
    "plic": MemMapEntry(0xC000000, 0x600000),
    "uart0": MemMapEntry(0x10000000, 0x100),
    "virtio": MemMapEntry(0x10001000, 0x1000),  # slot i at base + i * size
    "dram": MemMapEntry(0x80000000, 0),  # size: the machine's memory
}

# PLIC sources (QEMU 7.2 ``virt.h``)
UART0_IRQ = 10
RTC_IRQ = 11
VIRTIO_IRQ = 1  # slot i raises VIRTIO_IRQ + i
VIRTIO_COUNT = 8
PCIE_IRQ = 0x20

#: sources including the never-used source 0 (QEMU's VIRT_IRQCHIP_NUM_SOURCES)
PLIC_NUM_SOURCES = 96
#: priority levels 1..7 (QEMU's VIRT_IRQCHIP_NUM_PRIO - 1)
PLIC_NUM_PRIORITIES = 7

#: mtime ticks per second (10 MHz: one tick per 100 ns of guest time)
TIMEBASE_FREQ = 10_000_000
#: the ns16550a's input clock (3.6864 MHz)
UART_CLOCK_FREQ = 0x384000

#: RISC-V ``mip`` bits the board's interrupt controllers drive
MIP_SSIP = 1
MIP_MSIP = 3
MIP_STIP = 5
MIP_MTIP = 7
MIP_SEIP = 9
MIP_MEIP = 11

#: where ``-kernel`` images go when the firmware is loaded at the DRAM base
KERNEL_BOOT_ADDRESS = 0x80200000

MIB = 1 << 20


def fdt_load_addr(dram_base: int, mem_size: int, fdt_size: int) -> int:
    """Where QEMU 7.2 puts the device tree: the end of DRAM (capped at 3 GiB),
    minus the blob, aligned down to 2 MiB (``riscv_load_fdt``)."""
    dram_end = dram_base + mem_size
    top = min(dram_end, 3072 * MIB) if dram_base < 3072 * MIB else dram_end
    return (top - fdt_size) & ~(2 * MIB - 1)


def initrd_start(kernel_entry: int, mem_size: int) -> int:
    """Where QEMU 7.2 loads an initrd: half of RAM past the kernel, at most 128 MiB."""
    return kernel_entry + min(mem_size // 2, 128 * MIB)

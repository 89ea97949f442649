"""The riscv64 ``virt`` board's address map and interrupt numbers (QEMU 7.2's).

What the ``riscv-virt`` machine, its device tree and its reset ROM need: where
each device sits, which PLIC source it raises, where the boot images go.  The
devices' own numbers (window sizes, PLIC sources and priorities, timebase,
``mip`` bits) are the devices' (``vmforge_riscv_devices``).
"""

from __future__ import annotations

from vmforge.pci import GpexHost
from vmforge_riscv_devices.clint import Clint
from vmforge_riscv_devices.goldfish_rtc import GoldfishRtc
from vmforge_riscv_devices.plic import Plic
from vmforge_riscv_devices.sifive_test import SifiveTest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from vmforge.typing_runtime import NamedTuple

__all__ = [
    "MEMMAP",
    "MemMapEntry",
    "fdt_load_addr",
    "initrd_start",
]


class MemMapEntry(NamedTuple):
    base: int
    size: int


#: QEMU 7.2 ``virt_memmap`` (the parts vmforge models)
MEMMAP: dict[str, MemMapEntry] = {
    "mrom": MemMapEntry(0x1000, 0xF000),
    "test": MemMapEntry(0x100000, SifiveTest.mmio_size),
    "rtc": MemMapEntry(0x101000, GoldfishRtc.mmio_size),
    "clint": MemMapEntry(0x2000000, Clint.mmio_size),
    "plic": MemMapEntry(0xC000000, Plic.mmio_size),
    "pcie_pio": MemMapEntry(0x3000000, 0x10000),
    "uart0": MemMapEntry(0x10000000, 0x100),
    "virtio": MemMapEntry(0x10001000, 0x1000),  # slot i at base + i * size
    "pcie_ecam": MemMapEntry(0x30000000, 0x10000000),
    "pcie_mmio": MemMapEntry(0x40000000, 0x40000000),
    "dram": MemMapEntry(0x80000000, 0),  # size: the machine's memory
}

# PLIC sources (QEMU 7.2 ``virt.h``)
UART0_IRQ = 10
RTC_IRQ = 11
VIRTIO_IRQ = 1  # slot i raises VIRTIO_IRQ + i
VIRTIO_COUNT = 8
PCIE_IRQ = 0x20

#: the ns16550a's input clock (3.6864 MHz)
UART_CLOCK_FREQ = 0x384000

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


#: the size of the PCIe high MMIO window (QEMU 7.2's VIRT64_HIGH_PCIE_MMIO_SIZE)
PCIE_HIGH_MMIO_SIZE = 16 << 30


def pcie_high_mmio_base(dram_base: int, mem_size: int) -> int:
    """QEMU 7.2: the high PCIe window starts at the end of RAM rounded up to its size."""
    end = dram_base + mem_size
    return -(-end // PCIE_HIGH_MMIO_SIZE) * PCIE_HIGH_MMIO_SIZE


def pcie_host(mem_size: int) -> GpexHost:
    """The board's generic ECAM host bridge with QEMU 7.2's windows."""
    return GpexHost(ecam_size=MEMMAP["pcie_ecam"].size,
                    mmio=(MEMMAP["pcie_mmio"].base, MEMMAP["pcie_mmio"].size),
                    pio=(MEMMAP["pcie_pio"].base, MEMMAP["pcie_pio"].size),
                    high_mmio=(pcie_high_mmio_base(MEMMAP["dram"].base, mem_size),
                               PCIE_HIGH_MMIO_SIZE))

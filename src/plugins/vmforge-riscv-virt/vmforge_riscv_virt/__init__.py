"""vmforge-riscv-virt: the riscv64 ``virt`` board (QEMU 7.2's).

- the ``riscv-virt`` machine (:mod:`vmforge_riscv_virt.machine`);
- :mod:`vmforge_riscv_virt.board`: the address map and interrupt numbers;
- :func:`build_virt_fdt`: the board's device tree from the placed devices;
- :func:`reset_rom`: the reset vector and ``fw_dynamic_info`` at 0x1000.

The devices it places come from ``vmforge-riscv-devices`` (PLIC, CLINT, test
finisher, goldfish RTC), ``vmforge-serial`` (the ns16550a UART) and the core
(the virtio-mmio slots, ``vmforge.virtio.mmio``).
"""

from __future__ import annotations

from vmforge_riscv_virt.fdt_virt import Placed, VirtFdtConfig, build_virt_fdt
from vmforge_riscv_virt.rom import FwDynamicInfo, reset_rom, reset_vector

__all__ = [
    "FwDynamicInfo",
    "Placed",
    "VirtFdtConfig",
    "build_virt_fdt",
    "reset_rom",
    "reset_vector",
]
__version__ = "0.1.0"

"""vmforge-riscv-virt: the devices of the riscv64 ``virt`` board (QEMU 7.2's).

- :class:`Plic` (``riscv-plic``): SiFive PLIC, M and S contexts per hart;
- :class:`Clint` (``riscv-clint``): msip, mtimecmp and mtime on the machine clock;
  :class:`HartClint`, the same registers over the harts' own time (what the
  boards use with vmforge's CPU);
- :class:`SifiveTest` (``sifive-test``): the test finisher (poweroff, reboot, fail);
- :class:`GoldfishRtc` (``goldfish-rtc``): the real-time clock with its alarm;
- the virtio-mmio slots come from the core (``vmforge.virtio.mmio``);
- :func:`build_virt_fdt`: the board's device tree from the placed devices;
- :func:`reset_rom`: the reset vector and ``fw_dynamic_info`` at 0x1000;
- :mod:`vmforge_riscv_virt.board`: the address map and interrupt numbers.

The ``riscv-virt`` machine (:mod:`vmforge_riscv_virt.machine`) is built from
these parts; the ``spike`` machine (``vmforge-riscv-spike``) uses the CLINT.
"""

from __future__ import annotations

from vmforge_riscv_virt.clint import Clint, HartClint
from vmforge_riscv_virt.fdt_virt import Placed, VirtFdtConfig, build_virt_fdt
from vmforge_riscv_virt.goldfish_rtc import GoldfishRtc
from vmforge_riscv_virt.plic import Plic
from vmforge_riscv_virt.rom import FwDynamicInfo, reset_rom, reset_vector
from vmforge_riscv_virt.sifive_test import SifiveTest

__all__ = [
    "Clint",
    "FwDynamicInfo",
    "GoldfishRtc",
    "HartClint",
    "Placed",
    "Plic",
    "SifiveTest",
    "VirtFdtConfig",
    "build_virt_fdt",
    "reset_rom",
    "reset_vector",
]
__version__ = "0.1.0"

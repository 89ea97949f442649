"""vmforge-riscv-devices: the RISC-V devices QEMU's boards share (QEMU 7.2's).

- :class:`Plic` (``riscv-plic``): SiFive PLIC, M and S contexts per hart;
- :class:`Clint` (``riscv-clint``): msip, mtimecmp and mtime on the machine clock;
  :class:`HartClint`, the same registers over the harts' own time (what the
  boards use with vmforge's CPU);
- :class:`SifiveTest` (``sifive-test``): the test finisher (poweroff, reboot, fail);
- :class:`GoldfishRtc` (``goldfish-rtc``): the real-time clock with its alarm;
- :mod:`vmforge_riscv_devices.hart`: the ``mip`` bits the interrupt controllers
  drive and :class:`HartIrqInputs`, what they need of a hart.

The boards place them: ``riscv-virt`` (``vmforge-riscv-virt``) all four,
``spike`` (``vmforge-riscv-spike``) the CLINT.
"""

from __future__ import annotations

from vmforge_riscv_devices.clint import Clint, HartClint
from vmforge_riscv_devices.goldfish_rtc import GoldfishRtc
from vmforge_riscv_devices.hart import HartIrqInputs
from vmforge_riscv_devices.plic import Plic
from vmforge_riscv_devices.sifive_test import SifiveTest

__all__ = [
    "Clint",
    "GoldfishRtc",
    "HartClint",
    "HartIrqInputs",
    "Plic",
    "SifiveTest",
]
__version__ = "0.1.0"

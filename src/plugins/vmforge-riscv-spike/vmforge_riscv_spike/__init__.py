"""The RISC-V ``spike`` test machine: RAM at 0x80000000, harts, HTIF."""

from vmforge_riscv_spike.htif import Htif
from vmforge_riscv_spike.machine import Spike

__all__ = ["Htif", "Spike"]

"""The ``spike`` machine: what riscv-tests and bare-metal programs expect.

Like QEMU's ``-M spike``: RAM at 0x80000000, a CLINT at 0x2000000, harts
starting in M-mode at the program's entry with ``a0`` = hart id, HTIF found
from the ELF's ``tohost`` / ``fromhost`` symbols.
``vmforge run -M spike -bios none -kernel prog.elf`` runs the program and exits
with its HTIF status, as QEMU does.
"""

from __future__ import annotations

from typing import Any

from vmforge.accel.cluster import HartMachine
from vmforge.config import MachineProp
from vmforge.loader import EM_RISCV, load_elf
from vmforge.machine import MachineError, ShutdownReason
from vmforge_riscv_devices.clint import HartClint
from vmforge_riscv_spike.htif import Htif

__all__ = ["Spike"]

DRAM_BASE = 0x8000_0000
CLINT_BASE = 0x0200_0000
#: instructions per slice while the guest is using HTIF
MIN_SLICE = 2_000


class Spike(HartMachine):
    """RAM, harts and HTIF: the RISC-V test machine."""

    name = "spike"
    description = "RISC-V spike test machine (HTIF console and exit)"
    default_memory = 128 << 20
    max_cpus = 8
    properties = {"slice": MachineProp(int, 200_000, "the longest CPU slice, in instructions",
                                       min=1, max=1 << 32)}

    def build(self) -> None:
        cfg = self.config
        self.refuse_unsupported("drives", "devices", "netdevs")
        if cfg.bios not in ("none", None) and cfg.kernel is None:
            raise MachineError("spike: give the program with -kernel (firmware with -bios "
                               "needs a device tree, which spike does not build yet; "
                               "use -bios none)")
        if cfg.bios not in ("none", "default", None):
            raise MachineError("spike: only -bios none is supported")
        if cfg.kernel is None:
            raise MachineError("spike: nothing to run: give -kernel PROGRAM.elf")
        self.add_ram(DRAM_BASE, self.memory_size)
        self.max_slice = int(self.props["slice"])
        cluster = self.make_cluster(slice_instructions=self.max_slice)
        self.clint = self.add_device(HartClint(cluster), CLINT_BASE)
        for h, hart in enumerate(cluster.harts):
            self.clint.connect_hart(h, hart)
        image = load_elf(self.memory, cfg.kernel, machine=EM_RISCV)
        if self.cpu_trace is not None:
            self.cpu_trace.add_symbols(cfg.kernel, image.symbol_table)
        self.reset_pc = image.entry
        tohost = image.symbols.get("tohost")
        if tohost is None:
            raise MachineError(f"spike: {cfg.kernel} has no 'tohost' symbol: "
                               "the program cannot report its exit status")
        self.htif = Htif(self.memory, tohost, image.symbols.get("fromhost"),
                         self.serial_chardev(0), self._htif_exit)

    def reload_images(self) -> None:
        assert self.config.kernel is not None
        load_elf(self.memory, self.config.kernel, machine=EM_RISCV, want_symbols=False)

    @property
    def memory(self) -> Any:
        return self.space.memory

    def _htif_exit(self, code: int) -> None:
        reason = ShutdownReason.POWEROFF if code == 0 else ShutdownReason.FAIL
        self.request_shutdown(reason, code & 0xFF if code else 0)
        self.exit_code = code

    def run_cpus(self) -> bool:
        halted = super().run_cpus()
        cluster = self.cluster
        assert cluster is not None
        # HTIF is polled between slices: while the guest talks to it, slices are
        # short so a character costs little; when it is quiet they grow again
        if self.htif.poll():
            cluster.slice_instructions = MIN_SLICE
        elif cluster.slice_instructions < self.max_slice:
            cluster.slice_instructions = min(self.max_slice, cluster.slice_instructions * 2)
        return halted

"""A few thousand random tiny guests on the RISC-V machines (spike, and
riscv-virt when it is installed): random bytes as firmware, random entry
points (in RAM, outside it, in the ROM); every run must end by itself on time,
whatever the code does (trap storms, wild jumps, wfi with nothing armed,
endless loops).  ``VMFORGE_FUZZ_GUESTS=N`` sets how many."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from vmforge.config import MachineConfig
from vmforge.plugins import registry


def _machine(name: str, kernel: Path | None, memory: int) -> object:
    cls = registry().load("machine", name)
    cfg = MachineConfig(machine=name, memory=memory, bios="none",
                        kernel=str(kernel) if kernel else None, serial=["null"])
    return cls(cfg)


def _fuzz_count() -> int:
    return int(os.environ.get("VMFORGE_FUZZ_GUESTS", "2000"))


@pytest.mark.slow
def test_random_tiny_guests_all_end_on_time(tmp_path: Path, build_prog) -> None:
    """Random bytes as firmware at random entry points, on each machine: every
    run ends by itself within its timeout (plus a margin for one slice)."""
    rng = random.Random(1234)
    hello = build_prog("hello")               # spike needs an ELF with tohost
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    installed = registry().names("machine")
    machines = [n for n in ("spike", "riscv-virt") if n in installed]
    worst = 0.0
    for i in range(_fuzz_count()):
        name = machines[i % len(machines)]
        m = _machine(name, empty if name == "riscv-virt" else hello, 16 << 20)
        m.realize()
        ram = 0x8000_0000
        code = rng.randbytes(rng.choice([4, 64, 4096]))
        m.space.memory.write(ram, code)
        entry = rng.choice([ram, ram + rng.randrange(0, len(code), 2), 0,
                            rng.randrange(0, 1 << 64, 2), 0x1000])
        for hart in m.cpus:
            hart.flush_caches()
            hart.pc = entry
        t0 = time.monotonic()
        m.run(timeout=0.01)
        worst = max(worst, time.monotonic() - t0)
        m.close()
        assert m.shutdown_reason is not None
    assert worst < 2.0, f"a guest ran {worst:.2f} s past a 0.01 s timeout"

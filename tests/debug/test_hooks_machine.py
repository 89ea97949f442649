"""``machine.hooks`` on a running riscv-virt machine: a callback pauses the
machine and it resumes; a callback's exception ends ``machine.wait()`` with it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gdbkit import COUNTER, LOOP_PROGRAM, RAM

from vmforge.accel.interp import RiscvHart
from vmforge.chardev import BufferChar
from vmforge.config import MachineConfig
from vmforge.testing.riscv_asm import assemble


def start(tmp_path: Path):  # type: ignore[no-untyped-def]
    from vmforge_riscv_virt.machine import RiscvVirt

    image = tmp_path / "loop.bin"
    image.write_bytes(assemble(LOOP_PROGRAM, tmp_path))
    machine = RiscvVirt(MachineConfig(machine="riscv-virt", memory=64 << 20, bios="none",
                                      kernel=str(image), serial=[BufferChar()]))
    machine.realize()
    return machine


def test_a_hook_pauses_the_machine_and_it_resumes(tmp_path: Path) -> None:
    machine = start(tmp_path)
    seen: list[int] = []

    def on_store(hart: RiscvHart, address: int, size: int, value: int) -> None:
        seen.append(value)
        if value == 1000:
            machine.pause()

    machine.hooks.mem_write(on_store, COUNTER, COUNTER)
    machine.start()
    try:
        deadline = time.monotonic() + 30
        while not (machine.paused and len(seen) >= 1000) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert machine.paused and 1000 <= len(seen) <= 1001      # the block's end
        assert seen == list(range(1, len(seen) + 1))
        machine.resume()
        while len(seen) < 5000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(seen) >= 5000
    finally:
        machine.request_shutdown("user", 0)
        machine.resume()
        assert machine.wait(30) == 0


def test_an_exception_in_a_hook_ends_the_machine_with_it(tmp_path: Path) -> None:
    machine = start(tmp_path)

    def on_loop(hart: RiscvHart, pc: int, size: int) -> None:
        if hart.x[5] == 77:
            raise LookupError("seventy-seven")

    machine.hooks.code(on_loop, RAM + 4, RAM + 4)
    machine.start()
    with pytest.raises(LookupError, match="seventy-seven"):
        machine.wait(30)
    assert machine.cpus[0].pc == RAM + 4 and machine.cpus[0].x[5] == 77

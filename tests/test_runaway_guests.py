"""Guests that never stop by themselves: trap storms and random code.

A hart whose trap handler faults (mtvec 0 with nothing at 0, ``jr zero``, an
entry point outside RAM) retires no instruction; it must still end its slice,
so ``--timeout``, Ctrl-C, the monitor and every other check of the run loop
keep working, as for any endless loop.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmforge.accel.interp import RiscvHart, StopReason
from vmforge.memory import AddressSpace
from vmforge.testing.oracles import require_program

VMFORGE = [sys.executable, "-m", "vmforge.cli.main"]
JR_ZERO = bytes.fromhex("67800000")


def test_trap_storm_ends_the_slice() -> None:
    space = AddressSpace()
    space.add_ram(0x8000_0000, 1 << 20)
    hart = RiscvHart(space, pc=0)            # nothing at 0, mtvec 0: fault forever
    t0 = time.monotonic()
    result = hart.run(100_000)
    assert time.monotonic() - t0 < 5
    assert result.reason is StopReason.BUDGET
    assert result.executed == 0
    assert hart.csr("mcause") == 1           # instruction access fault, again and again
    hart.pc = 0x8000_0000                    # a jr zero into the same storm
    space.memory.write(0x8000_0000, JR_ZERO)
    assert hart.run(50_000).reason is StopReason.BUDGET


def test_single_step_over_a_trap_still_runs_the_handler() -> None:
    space = AddressSpace()
    space.add_ram(0x8000_0000, 1 << 20)
    space.memory.write(0x8000_0100, bytes.fromhex("13000000"))   # nop at the handler
    hart = RiscvHart(space, pc=0x9000_0000)  # outside RAM
    hart.set_csr("mtvec", 0x8000_0100)
    result = hart.run(1, exact=True)
    assert result.executed == 1 and hart.pc == 0x8000_0104


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*VMFORGE, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60, **kw)


@pytest.mark.parametrize("content", [b"", JR_ZERO], ids=["empty", "jr-zero"])
def test_timeout_ends_a_faulting_guest(tmp_path: Path, content: bytes) -> None:
    image = tmp_path / "fw.bin"
    image.write_bytes(content)
    t0 = time.monotonic()
    proc = _run(["run", "-M", "riscv-virt", "-bios", "none", "-kernel", str(image),
                 "-nographic", "--timeout", "1"])
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 124, proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_ends_a_faulting_guest(tmp_path: Path) -> None:
    image = tmp_path / "empty.bin"
    image.write_bytes(b"")
    proc = subprocess.Popen([*VMFORGE, "run", "-M", "riscv-virt", "-bios", "none",
                                       "-kernel", str(image), "-nographic"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "Traceback" not in err


def test_d_int_shows_the_storm_as_qemu_does(tmp_path: Path) -> None:
    """``-d int`` prints each trap in QEMU's format (checked against QEMU's own
    output for the same guest), and a storm as its first traps and a count."""
    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    image = tmp_path / "jr.bin"
    image.write_bytes(JR_ZERO)
    ours = _run(["run", "-M", "riscv-virt", "-bios", "none", "-kernel", str(image),
                 "-nographic", "-d", "int", "--timeout", "0.5"])
    assert ours.returncode == 124
    log = tmp_path / "qemu.log"
    proc = subprocess.Popen([qemu, "-M", "virt", "-bios", "none", "-kernel", str(image),
                             "-d", "int", "-D", str(log), "-nographic", "-serial", "none",
                             "-monitor", "none"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    proc.terminate()
    proc.wait(timeout=30)
    want = log.read_text().splitlines()[:3]
    assert want and want[0].startswith("riscv_cpu_do_interrupt: hart:0")
    assert ours.stderr.splitlines()[:3] == want
    assert "more traps in this slice not shown (a trap storm)" in ours.stderr


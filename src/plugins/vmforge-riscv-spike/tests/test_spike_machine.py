"""The spike machine runs bare-metal programs as QEMU's -M spike does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from vmforge.chardev import BufferChar
from vmforge.config import MachineConfig
from vmforge.machine import MachineError
from vmforge.testing.oracles import needs, oracle_missing
from vmforge_riscv_spike import Spike

QEMU = shutil.which("qemu-system-riscv64")
EXPECTED = b"hello from spike\nfib(20) = 06765\n"


def test_python_api_runs_a_program(build_prog) -> None:
    console = BufferChar()
    m = Spike(MachineConfig(machine="spike", bios="none", kernel=str(build_prog("hello")),
                            serial=[console]))
    assert m.run(timeout=60) == 3
    assert console.output == EXPECTED
    assert m.shutdown_reason == "fail" and m.exit_code == 3


def test_syscall_proxy(build_prog) -> None:
    console = BufferChar()
    m = Spike(MachineConfig(machine="spike", bios="none", kernel=str(build_prog("syscall")),
                            serial=[console], smp=2))
    assert m.run(timeout=60) == 42
    assert console.output == b"written by the syscall proxy\n"


def test_vmforge_run_exit_status_and_console(build_prog, tmp_path) -> None:
    out = tmp_path / "console.txt"
    proc = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "run", "-M", "spike",
                           "-bios", "none", "-kernel", str(build_prog("hello")),
                           "-serial", f"file:{out}", "--timeout", "60"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert out.read_bytes() == EXPECTED


@needs("qemu-system-riscv64", package="qemu-system-misc")  # skips, or fails in CI
def test_same_as_qemu_spike(build_prog) -> None:
    elf = str(build_prog("hello"))
    qemu = subprocess.run([QEMU, "-M", "spike", "-bios", "none", "-kernel", elf, "-nographic",
                           "-monitor", "none"], capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    ours = subprocess.run([sys.executable, "-m", "vmforge.cli.main", "run", "-M", "spike",
                           "-bios", "none", "-kernel", elf, "-nographic", "--timeout", "60"],
                          capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ})
    assert qemu.returncode == ours.returncode == 3
    assert qemu.stdout.replace(b"\r\n", b"\n") == ours.stdout.replace(b"\r\n", b"\n") == EXPECTED


@pytest.mark.parametrize("emulator", ["vmforge", "qemu"])
def test_clint_timer_and_software_interrupts(build_prog, emulator: str) -> None:
    elf = str(build_prog("timer"))
    if emulator == "qemu":
        if QEMU is None:
            oracle_missing("qemu-system-riscv64 is not installed (Debian qemu-system-misc)")
        cmd = [QEMU, "-M", "spike", "-bios", "none", "-kernel", elf, "-nographic",
               "-monitor", "none"]
    else:
        cmd = [sys.executable, "-m", "vmforge.cli.main", "run", "-M", "spike", "-bios", "none",
               "-kernel", elf, "-nographic", "--timeout", "60"]
    proc = subprocess.run(cmd, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr


def test_refuses_what_it_cannot_run(tmp_path) -> None:
    with pytest.raises(MachineError, match="give -kernel"):
        Spike(MachineConfig(machine="spike", bios="none")).realize()
    with pytest.raises(MachineError, match="only -bios none"):
        Spike(MachineConfig(machine="spike", bios="fw.bin", kernel="x")).realize()

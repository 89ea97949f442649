"""Bare-metal test programs that report through the virt UART (0x1000_0000):
the bytes they write, on vmforge (a capturing device) and on QEMU 7.2
(``qemu-system-riscv64 -M virt -bios none``, serial to a file).  A plain module
next to the tests, as rv_randprog.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vmforge.testing.oracles import require_program

QEMU = "qemu-system-riscv64"
UART = 0x1000_0000


class UartCapture:
    """The UART's transmit register as a device: what the program writes."""

    valid_sizes = (1, 1)

    def __init__(self) -> None:
        self.out = bytearray()

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.out.append(value & 0xFF)


def attach_uart(space) -> UartCapture:
    """A capturing UART at the virt UART's address of ``space``."""
    uart = UartCapture()
    space.add_mmio(UART, uart, 0x100)
    return uart


def qemu_uart_output(image: bytes, workdir: Path, timeout: float = 300) -> bytes:
    """What ``image`` (loaded at 0x8000_0000) writes to the UART on QEMU; it must
    end through the test device with 0x5555."""
    qemu = require_program(QEMU, "qemu-system-misc")
    (workdir / "prog.bin").write_bytes(image)
    done = subprocess.run([qemu, "-M", "virt", "-bios", "none", "-kernel",
                           str(workdir / "prog.bin"), "-display", "none", "-monitor", "none",
                           "-serial", f"file:{workdir / 'uart.bin'}"],
                          stdin=subprocess.DEVNULL, timeout=timeout, capture_output=True)
    assert done.returncode == 0, done.stderr
    return (workdir / "uart.bin").read_bytes()

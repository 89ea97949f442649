"""MMIO decode: accesses per second, compiled decoder vs the pure-Python reference.

Run: ``.venv/bin/python -m pytest benchmarks/bench_mmio.py --benchmark-columns=mean,ops``
Each round performs ``N`` accesses; ``extra_info.accesses_per_s`` is the figure.
"""

from __future__ import annotations

import pytest

from vmforge._fast.mmio import access_loop
from vmforge.memory import AddressSpace
from vmforge.memory_ref import ReferenceAddressSpace

N = 20_000
UART = 0x1000_0000
RAM = 0x8000_0000


class Uart:
    """A register file the size of a UART: the shape of a typical Python device."""

    impl_sizes = (1, 4)

    def __init__(self) -> None:
        self.regs = [0] * 8

    def read(self, offset: int, size: int) -> int:
        return self.regs[offset & 7]

    def write(self, offset: int, size: int, value: int) -> None:
        self.regs[offset & 7] = value


def build(kind: str):
    space = AddressSpace() if kind == "compiled" else ReferenceAddressSpace()
    space.add_ram(RAM, 1 << 20)
    for i in range(8):  # a few neighbours so the lookup is not trivial
        space.add_mmio(0x1000_1000 + i * 0x1000, Uart(), 0x1000, f"virtio{i}")
    space.add_mmio(UART, Uart(), 0x100, "uart")
    return space


@pytest.mark.parametrize("kind", ["compiled", "reference"])
def test_device_read_from_python(benchmark, rate, kind) -> None:
    read = build(kind).read

    def run():
        for _ in range(N):
            read(UART + 5, 1)

    benchmark.group = "device access, Python caller"
    benchmark(run)
    rate(N)


@pytest.mark.parametrize("kind", ["compiled", "reference"])
def test_ram_read_from_python(benchmark, rate, kind) -> None:
    read = build(kind).read

    def run():
        for _ in range(N):
            read(RAM + 0x100, 8)

    benchmark.group = "RAM access, Python caller"
    benchmark(run)
    rate(N)


def test_device_read_from_c(benchmark, rate) -> None:
    """The path the CPU takes: decode in C, call the Python device."""
    space = build("compiled")
    benchmark.group = "device access, C caller (the CPU's path)"
    benchmark(access_loop, space, UART + 5, 1, N)
    rate(N)


def test_ram_read_from_c(benchmark, rate) -> None:
    space = build("compiled")
    benchmark.group = "RAM access, C caller (the CPU's path)"
    benchmark(access_loop, space, RAM + 0x100, 8, N * 50)
    rate(N * 50)

"""Fixtures: an ns16550a mapped in an address space, driven like a guest driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vmforge.chardev import BufferChar
from vmforge.memory import AddressSpace
from vmforge_serial import Ns16550a

UART_BASE = 0x1000_0000  # where QEMU's riscv virt machine puts its UART


class IrqRecorder:
    """An interrupt-controller input that records every level change."""

    def __init__(self) -> None:
        self.events: list[bool] = []
        self.level = False

    def __call__(self, number: int, level: bool) -> None:
        self.events.append(level)
        self.level = level

    def take(self) -> list[bool]:
        out, self.events = self.events, []
        return out


class Guest:
    """Register access the way a driver does it: ``base + (reg << regshift)``."""

    def __init__(self, space: AddressSpace, uart: Ns16550a, chardev: BufferChar,
                 irq: IrqRecorder, width: int) -> None:
        self.space = space
        self.uart = uart
        self.chardev = chardev
        self.irq = irq
        self.width = width
        self.shift = uart.regshift

    def rd(self, reg: int) -> int:
        return self.space.read(UART_BASE + (reg << self.shift), self.width)

    def wr(self, reg: int, value: int) -> None:
        self.space.write(UART_BASE + (reg << self.shift), self.width, value)


@pytest.fixture
def make_guest() -> Callable[..., Guest]:
    def make(regshift: int = 0, width: int = 1, **props: Any) -> Guest:
        chardev = BufferChar()
        uart = Ns16550a(chardev=chardev, regshift=regshift, **props)
        space = AddressSpace()
        uart.map(space, UART_BASE)
        irq = IrqRecorder()
        uart.irq.connect(irq, 10)
        return Guest(space, uart, chardev, irq, width)
    return make


@pytest.fixture
def guest(make_guest: Callable[..., Guest]) -> Guest:
    return make_guest()

"""Fixtures: a bare board (a Machine with a paused clock) and harts that record
what the interrupt controllers drive."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from vmforge.machine import Machine


class FakeHart:
    """The hart interface the devices assume: ``set_irq_line(bit, level)``."""

    def __init__(self) -> None:
        self.mip = 0
        self.events: list[tuple[int, bool]] = []

    def set_irq_line(self, bit: int, level: bool) -> None:
        self.events.append((bit, bool(level)))
        if level:
            self.mip |= 1 << bit
        else:
            self.mip &= ~(1 << bit)

    def bit(self, n: int) -> bool:
        return bool(self.mip >> n & 1)


class Board(Machine):
    """A machine with nothing but what a test adds (its clock stays paused)."""

    name = "test-board"
    max_cpus = 8

    def build(self) -> None:
        pass

    def run_cpus(self) -> bool:
        return True


@pytest.fixture
def board() -> Iterator[Board]:
    b = Board()
    yield b
    b.close()


@pytest.fixture
def new_hart() -> Callable[[], FakeHart]:
    """Makes recording harts (a fixture: test modules cannot import conftest)."""
    return FakeHart

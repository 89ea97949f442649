"""A bare machine for device tests: nothing but what a test adds (no CPUs, its
clock stays paused), and a hart stand-in that records interrupt lines."""

from __future__ import annotations

from typing import ClassVar

from vmforge.machine import Machine

__all__ = ["BareBoard", "RecordingHart"]


class BareBoard(Machine):
    """A machine with nothing but what a test adds (its clock stays paused)."""

    name: ClassVar[str] = "test-board"
    max_cpus: ClassVar[int] = 8

    def build(self) -> None:
        pass

    def run_cpus(self) -> bool:
        return True


class RecordingHart:
    """What interrupt controllers assume of a hart: ``set_irq_line(bit, level)``;
    keeps ``mip`` and every change in ``events``."""

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

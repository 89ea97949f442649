"""Interrupt lines and the interface of interrupt controllers.

A device holds :class:`IrqLine` objects and sets their level; a controller
(PLIC, APIC...) implements :class:`InterruptController` and hands out lines
with :meth:`InterruptController.line`.  Lines are level-triggered: the sink is
called only when the level changes.
"""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol, runtime_checkable
else:
    from vmforge.typing_runtime import Protocol, runtime_checkable

__all__ = ["InterruptController", "IrqLine", "IrqSink"]

#: What a line calls when its level changes: ``sink(number, level)``.
IrqSink = Callable[[int, bool], None]


class IrqLine:
    """One level-triggered interrupt line."""

    __slots__ = ("_sink", "level", "name", "number")

    def __init__(self, sink: IrqSink | None = None, number: int = 0, name: str = "") -> None:
        self._sink = sink
        self.number = number
        self.name = name or f"irq{number}"
        self.level = False

    def set(self, level: bool) -> None:
        """Drive the line to ``level``; the controller hears of changes only."""
        level = bool(level)
        if level != self.level:
            self.level = level
            if self._sink is not None:
                self._sink(self.number, level)

    def raise_(self) -> None:
        self.set(True)

    def lower(self) -> None:
        self.set(False)

    def pulse(self) -> None:
        """Raise then lower (an edge, for edge-triggered controllers)."""
        self.set(True)
        self.set(False)

    def connect(self, sink: IrqSink | None, number: int | None = None) -> None:
        """Wire the line to a controller input (re-sends the current level)."""
        self._sink = sink
        if number is not None:
            self.number = number
        if sink is not None and self.level:
            sink(self.number, True)

    def __repr__(self) -> str:
        return f"IrqLine({self.name}, level={int(self.level)})"


@runtime_checkable
class InterruptController(Protocol):
    """What a machine asks of an interrupt controller."""

    def set_irq(self, number: int, level: bool) -> None:
        """Source ``number`` is now at ``level``."""

    def line(self, number: int) -> IrqLine:
        """A line wired to source ``number``."""

"""``isa-debug-exit``: QEMU's exit-through-a-port device (``hw/misc/debugexit.c``).

A guest write of any size (1..4 bytes) at ``iobase`` .. ``iobase + iosize - 1``
ends the machine with exit status ``(value << 1) | 1`` (so never 0: a test
guest's "pass" is distinguishable from a clean power-off); reads return 0.
Defaults as QEMU 7.2: ``iobase=0x501``, ``iosize=2``.
"""

from __future__ import annotations

from typing import Any

from vmforge.device import Device, DeviceError, Prop
from vmforge.machine import ShutdownReason

__all__ = ["IsaDebugExit"]


class IsaDebugExit(Device):
    """``-device isa-debug-exit,iobase=0xf4,iosize=4``"""

    name = "isa-debug-exit"
    valid_sizes = (1, 4)
    impl_sizes = (1, 4)
    unaligned = True

    iobase = Prop(int, 0x501, "the first port")
    iosize = Prop(int, 2, "how many ports (1..4)")

    def __init__(self, **props: Any) -> None:
        super().__init__(**props)
        if not 1 <= self.iosize <= 4:
            raise DeviceError(f"device {self.name!r}: iosize={self.iosize} must be 1..4")
        if not 0 <= self.iobase <= 0x10000 - self.iosize:
            raise DeviceError(f"device {self.name!r}: iobase={self.iobase:#x} is not a port")
        self._machine: Any = None
        #: the value the guest wrote last (None: none yet)
        self.value: int | None = None

    def realize(self, machine: Any) -> None:
        self._machine = machine
        io = getattr(machine, "io", None)
        if io is None:
            raise DeviceError(f"device {self.name!r}: machine {machine.name!r} has no "
                              "I/O port space (an x86 machine has)")
        io.add_mmio(self.iobase, self, self.iosize, self.name)
        self.base = self.iobase
        super().realize(machine)

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        self.value = value
        if self._machine is not None:
            self._machine.request_shutdown(ShutdownReason.POWEROFF, (value << 1) | 1)

    # -- saved state: nothing (QEMU's debugexit has no vmstate either: a write ends
    # the machine, nothing is left to carry) --------------------------------------------

    def save_state(self) -> dict[str, Any]:
        from vmforge.migration.record import header

        return header("isa-debug-exit", 1)

    def check_state(self, record: Any) -> None:
        from vmforge.migration.record import check_header

        check_header(record, "isa-debug-exit", 1)

    def load_state(self, record: dict[str, Any]) -> None:
        self.check_state(record)

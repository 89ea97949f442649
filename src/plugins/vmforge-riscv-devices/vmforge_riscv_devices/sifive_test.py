"""SiFive's test finisher (``hw/misc/sifive_test.c``): how a guest powers off,
reboots or reports failure on the ``virt`` board.

A write to offset 0 of ``status | code << 16``:

- ``0x5555`` (PASS): power off, exit status 0;
- ``0x3333`` (FAIL): stop with exit status ``code`` (QEMU exits with it);
- ``0x7777`` (RESET): reset the machine.

Anything else is ignored; reads return 0.  Linux reaches it through the
``syscon-poweroff`` / ``syscon-reboot`` nodes that point at it.
"""

from __future__ import annotations

from vmforge.device import Device
from vmforge.fdt import DeviceTree, FdtNode, FdtPlacement
from vmforge.lazy import lazy_logger
from vmforge.migration.record import check_header, header

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["FINISHER_FAIL", "FINISHER_PASS", "FINISHER_RESET", "SifiveTest"]

log = lazy_logger("vmforge_riscv_devices.sifive_test")  # (logging imported by a message)

FINISHER_FAIL = 0x3333
FINISHER_PASS = 0x5555
FINISHER_RESET = 0x7777


class SifiveTest(Device):
    """The test finisher; acts on the machine it was realized on."""

    name: ClassVar[str] = "sifive-test"
    mmio_size: ClassVar[int] = 0x1000
    valid_sizes: ClassVar[tuple[int, int]] = (2, 4)
    impl_sizes: ClassVar[tuple[int, int]] = (2, 4)

    def __init__(self, machine: Any = None, **props: Any) -> None:
        super().__init__(**props)
        self.machine = machine

    def realize(self, machine: Any) -> None:
        if self.machine is None:
            self.machine = machine
        super().realize(machine)

    STATE_VERSION: ClassVar[int] = 1

    def save_state(self) -> dict[str, Any]:
        """The finisher holds no state: a named, versioned empty record."""
        return header(self.name, self.STATE_VERSION)

    def check_state(self, record: Any) -> None:
        """``StateError`` unless ``record`` is this device's (empty) record."""
        check_header(record, self.name, self.STATE_VERSION)

    def load_state(self, record: dict[str, Any]) -> None:
        self.check_state(record)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset != 0:
            return
        status = value & 0xFFFF
        code = (value >> 16) & 0xFFFF
        machine = self.machine
        if machine is None:
            log.warning("sifive-test: write %#x with no machine to act on", value)
            return
        if status == FINISHER_FAIL:
            machine.request_shutdown("fail", code)
        elif status == FINISHER_PASS:
            machine.request_shutdown("poweroff", 0)
        elif status == FINISHER_RESET:
            machine.request_reset()
        else:
            log.debug("sifive-test: ignored write %#x", value)

    def fdt_node(self, tree: DeviceTree, parent: FdtNode, place: FdtPlacement) -> FdtNode:
        """``test@ADDR`` (a syscon) plus ``/poweroff`` and ``/reboot`` nodes using it."""
        node = parent.add(f"test@{place.base:x}")
        node.set("compatible", ["sifive,test1", "sifive,test0", "syscon"])
        tree.reg(node, (place.base, place.size))
        tree.label("test", node)
        handle = tree.phandle(node)
        for name, compatible, value in (("poweroff", "syscon-poweroff", FINISHER_PASS),
                                        ("reboot", "syscon-reboot", FINISHER_RESET)):
            sub = tree.root.add(name)
            sub.set("compatible", compatible)
            sub.set("regmap", handle)
            sub.set("offset", 0)
            sub.set("value", value)
        return node

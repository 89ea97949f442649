"""isa-debug-exit as QEMU's: a write of V ends the machine with (V << 1) | 1."""

from __future__ import annotations

import pytest

from vmforge.device import DeviceError
from vmforge.machine import Machine, ShutdownReason
from vmforge.memory import AddressSpace
from vmforge.plugins import registry
from vmforge_pc_devices import IsaDebugExit


class PortBoard(Machine):
    name = "port-board"

    def __init__(self) -> None:
        super().__init__()
        self.io = AddressSpace(name="io")

    def build(self) -> None:
        pass


@pytest.mark.parametrize("size,value", [(1, 0x21), (2, 0x1234), (4, 0x7F)])
def test_a_write_ends_the_machine_with_qemus_status(size, value):
    board = PortBoard()
    dev = board.add_device(IsaDebugExit(iobase=0xF4, iosize=4))
    assert board.io.read(0xF4, size) == 0
    board.io.write(0xF4, size, value)
    assert board.stopped
    assert board.shutdown_reason == ShutdownReason.POWEROFF
    assert board.exit_status == (value << 1) | 1
    assert dev.value == value


def test_qemus_defaults_and_only_its_ports():
    board = PortBoard()
    board.add_device(IsaDebugExit())
    board.io.write(0x503, 1, 5)            # past iobase 0x501 + iosize 2
    assert not board.stopped
    board.io.write(0x502, 1, 5)
    assert board.exit_status == 11


def test_bad_properties_and_machines_without_ports():
    with pytest.raises(DeviceError, match="iosize=5"):
        IsaDebugExit(iosize=5)
    with pytest.raises(DeviceError, match="iobase"):
        IsaDebugExit(iobase=0xFFFF, iosize=4)

    class NoPorts(Machine):
        name = "no-ports"

        def build(self) -> None:
            pass

    with pytest.raises(DeviceError, match="no I/O port space"):
        NoPorts().add_device(IsaDebugExit())


def test_registered_as_a_device():
    assert registry().load("device", "isa-debug-exit") is IsaDebugExit

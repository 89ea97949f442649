"""SiFive test finisher: the codes QEMU's hw/misc/sifive_test.c acts on."""

from __future__ import annotations

import pytest

from vmforge.machine import Machine
from vmforge_riscv_devices import SifiveTest

BASE = 0x100000  # where the virt board puts it


class StubMachine:
    """Just what the finisher calls."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def request_shutdown(self, reason: str, status: int = 0) -> None:
        self.calls.append(("shutdown", reason, status))

    def request_reset(self) -> None:
        self.calls.append(("reset",))


@pytest.fixture
def rig(board):
    stub = StubMachine()
    dev = SifiveTest(machine=stub)
    board.add_device(dev, BASE)
    return board.space, stub


@pytest.mark.parametrize(("value", "call"), [
    (0x5555, ("shutdown", "poweroff", 0)),
    (0x3333, ("shutdown", "fail", 0)),
    (0x3333 | 3 << 16, ("shutdown", "fail", 3)),
    (0x3333 | 0xFFFF << 16, ("shutdown", "fail", 0xFFFF)),
    (0x7777, ("reset",)),
    (0x5555 | 9 << 16, ("shutdown", "poweroff", 0)),  # PASS ignores the code
])
def test_codes(rig, value, call):
    space, stub = rig
    space.write(BASE, 4, value)
    assert stub.calls == [call]


def test_16bit_writes_work_too(rig):
    space, stub = rig
    space.write(BASE, 2, 0x5555)
    assert stub.calls == [("shutdown", "poweroff", 0)]


def test_other_writes_and_reads_do_nothing(rig):
    space, stub = rig
    for value in (0, 0x1234, 0x5556, 0x77770000, 0x33):
        space.write(BASE, 4, value)
    space.write(BASE + 4, 4, 0x5555)  # only offset 0 counts
    space.write(BASE, 8, 0x5555)  # 64-bit: not a valid access (QEMU: 2..4 bytes)
    space.write(BASE, 1, 0x55)
    assert stub.calls == []
    assert space.read(BASE, 4) == 0


def test_without_a_machine_a_write_is_dropped():
    dev = SifiveTest()
    dev.write(0, 4, 0x5555)  # no machine: logged, nothing raised


class FinishingMachine(Machine):
    """A guest that writes the finisher from its first slice."""

    name = "finish-test"

    def build(self) -> None:
        self.add_device(SifiveTest(), BASE)

    def run_cpus(self) -> bool:
        self.space.write(BASE, 4, self.config.extra["finish"])
        return False


def test_fail_code_becomes_the_exit_status_of_run():
    m = FinishingMachine()
    m.config.extra["finish"] = 0x3333 | 42 << 16
    try:
        assert m.run(timeout=10) == 42
        assert m.shutdown_reason == "fail"
    finally:
        m.close()


def test_pass_powers_off_with_status_0():
    m = FinishingMachine()
    m.config.extra["finish"] = 0x5555
    try:
        assert m.run(timeout=10) == 0
        assert m.shutdown_reason == "poweroff"
    finally:
        m.close()


def test_reset_request_reaches_the_machine(board):
    dev = SifiveTest()
    board.add_device(dev, BASE)
    board.space.write(BASE, 4, 0x7777)
    assert board._reset_requested
    assert not board.stopped

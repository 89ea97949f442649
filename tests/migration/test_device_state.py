"""Each riscv-virt device's and the hart's state record: save, change the device,
load, and the device is what it was; a corrupt record is refused with a
``StateError`` naming the device and the field, and the device is unchanged."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from vmforge.accel.interp import RiscvHart
from vmforge.clock import TimerQueue, VirtualClock
from vmforge.memory import AddressSpace
from vmforge.migration import StateError, codec
from vmforge_riscv_devices.clint import Clint
from vmforge_riscv_devices.goldfish_rtc import GoldfishRtc
from vmforge_riscv_devices.plic import Plic
from vmforge_riscv_devices.sifive_test import SifiveTest
from vmforge_serial.uart import Ns16550a


def _clint() -> Any:
    clock = VirtualClock()
    dev = Clint(clock=clock, num_harts=2)
    dev.set_mtimecmp(1, 5000)
    dev.write(0, 4, 1)                       # msip[0]
    clock.advance(123_456)
    dev.set_mtime(77)
    return dev


def _clint_mutate(dev: Any) -> None:
    dev.write(0, 4, 0)
    dev.set_mtimecmp(0, 9)
    dev.set_mtime(1 << 40)


def _plic() -> Any:
    dev = Plic(num_harts=2)
    dev.write(4 * 10, 4, 5)                  # priority of source 10
    dev.write(0x2000 + 0x80 * 1, 4, 1 << 10)  # context 1 enables it
    dev.set_irq(10, True)
    dev.set_irq(3, True)
    dev.read(0x200000 + 0x1000 * 1 + 4, 4)    # context 1 claims 10
    return dev


def _plic_mutate(dev: Any) -> None:
    dev.write(0x200000 + 0x1000 * 1 + 4, 4, 10)   # complete
    dev.write(4 * 3, 4, 2)
    dev.set_irq(10, False)


def _rtc() -> Any:
    clock = VirtualClock()
    dev = GoldfishRtc(vm_clock=clock, timers=TimerQueue(clock), clock="vm",
                      wall_ns=lambda: 1_700_000_000_000_000_000)
    dev.write(0x10, 4, 1)                    # IRQ_ENABLED
    dev.write(0x0C, 4, dev.now() >> 32)
    dev.write(0x08, 4, (dev.now() + 10_000) & 0xFFFFFFFF)   # an alarm 10 us ahead
    return dev


def _rtc_mutate(dev: Any) -> None:
    dev.write(0x14, 4, 0)                    # CLEAR_ALARM
    dev.write(0x10, 4, 0)
    dev.write(0x00, 4, 12345)                # TIME_LOW: the guest sets the clock


def _uart() -> Any:
    dev = Ns16550a()
    dev.write(2, 1, 0x01)                    # FIFO on
    dev.write(1, 1, 0x05)                    # IER: RDI, RLSI
    dev.write(7, 1, 0x5A)
    dev.receive(b"abc")
    dev.inject_rx_error(0x20, parity=True)
    return dev


def _uart_mutate(dev: Any) -> None:
    dev.read(0, 1)
    dev.read(5, 1)
    dev.write(3, 1, 0x80)
    dev.write(0, 1, 0x01)


def _hart() -> Any:
    space = AddressSpace()
    space.add_ram(0x8000_0000, 1 << 20)
    hart = RiscvHart(space, 0, pc=0x8000_0000)
    for i in range(1, 32):
        hart.x[i] = i * 0x0101_0101_0101
    hart.f[3] = 0x4000_0000_0000_0000
    for name, value in (("mstatus", 0x1800 | 0x2000 | 0xA), ("medeleg", 0xB1FF),
                        ("mideleg", 0x222), ("mie", 0xAAA), ("mtvec", 0x8000_0100),
                        ("stvec", 0xFFFF_FFFF_8000_0000), ("satp", 8 << 60 | 0x80123),
                        ("sscratch", 7), ("mepc", 0x8000_0040), ("fcsr", 0x65),
                        ("mcounteren", 7), ("sip", 2), ("pmpaddr0", 0x1234)):
        hart.set_csr(name, value)
    hart.mtimecmp = 99_999
    hart.set_irq_line(9, True)
    hart.priv = 1
    return hart


def _hart_mutate(hart: Any) -> None:
    hart.x[5] = 0
    hart.f[3] = 1
    hart.set_csr("satp", 0)
    hart.set_csr("fcsr", 0)
    hart.set_irq_line(9, False)
    hart.mtimecmp = 3
    hart.priv = 3
    hart.pc = 0x1000


CASES: dict[str, tuple[Callable[[], Any], Callable[[Any], None], str, Any, str]] = {
    # name: (make, mutate, field to corrupt, bad value, words the error must name)
    "clint": (_clint, _clint_mutate, "mtimecmp", [1, 2, 3], "riscv-clint state: mtimecmp"),
    "plic": (_plic, _plic_mutate, "pending", 1, "riscv-plic state: pending"),
    "plic-enable": (_plic, _plic_mutate, "enable", [0, 1 << 200, 0, 0],
                    "riscv-plic state: enable"),
    "rtc": (_rtc, _rtc_mutate, "irq_enabled", 1, "goldfish-rtc state: irq_enabled"),
    "uart": (_uart, _uart_mutate, "rx", [[0x41, 0]] * 17, "ns16550a state: rx"),
    "uart-ier": (_uart, _uart_mutate, "ier", 0x1F, "ns16550a state: ier"),
    "hart": (_hart, _hart_mutate, "priv", 2, "riscv-hart 0 state: priv"),
    "hart-satp": (_hart, _hart_mutate, "csrs", "satp-mode", "riscv-hart 0 state: csrs satp"),
    "hart-x": (_hart, _hart_mutate, "x", [0] * 31, "riscv-hart 0 state: x"),
    "hart-mstatus": (_hart, _hart_mutate, "csrs", "mstatus-xlen",
                     "riscv-hart 0 state: csrs mstatus"),
}


def _corrupt(rec: dict[str, Any], field: str, bad: Any) -> dict[str, Any]:
    bad_rec = copy.deepcopy(rec)
    if bad == "satp-mode":
        bad_rec["csrs"]["satp"] = 5 << 60
    elif bad == "mstatus-xlen":
        bad_rec["csrs"]["mstatus"] &= ~(3 << 32)     # UXL: not 64-bit
    else:
        bad_rec[field] = bad
    return bad_rec


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_and_corrupt_record_refused(case: str) -> None:
    make, mutate, field, bad, words = CASES[case]
    dev = make()
    rec = dev.save_state()
    assert codec.decode(codec.encode(rec)) == rec      # plain values only
    mutate(dev)
    assert dev.save_state() != rec
    dev.load_state(rec)
    assert dev.save_state() == rec
    mutate(dev)
    before = dev.save_state()
    with pytest.raises(StateError, match=words):
        dev.load_state(_corrupt(rec, field, bad))
    assert dev.save_state() == before


@pytest.mark.parametrize("case", ["clint", "plic", "rtc", "uart", "hart"])
def test_wrong_version_and_wrong_device_refused(case: str) -> None:
    dev = CASES[case][0]()
    rec = dev.save_state()
    with pytest.raises(StateError, match="version 99"):
        dev.load_state({**rec, "version": 99})
    with pytest.raises(StateError, match="the record is for 'other'"):
        dev.load_state({**rec, "name": "other"})


def test_finisher_record_is_named_and_versioned() -> None:
    dev = SifiveTest()
    rec = dev.save_state()
    dev.load_state(rec)
    with pytest.raises(StateError, match="sifive-test state: version"):
        dev.load_state({**rec, "version": 2})


def test_hart_time_and_reservation() -> None:
    """mtime comes back (instruction-counted time), an LR reservation is dropped."""
    hart = _hart()
    hart.set_icount(1, 1)
    hart.mtime = 5_000
    rec = hart.save_state()
    hart.mtime = 1
    hart.load_state(rec)
    assert hart.mtime == 5_000
    assert hart.reservations.active == 0


def test_uart_interrupt_follows_the_loaded_record() -> None:
    dev = _uart()
    assert dev.irq.level
    rec = dev.save_state()
    dev.write(1, 1, 0)
    assert not dev.irq.level
    dev.load_state(rec)
    assert dev.irq.level and dev.rx_level == 4


def test_rtc_alarm_rearmed_relative_to_the_clock() -> None:
    dev = _rtc()
    rec = dev.save_state()
    _rtc_mutate(dev)
    dev.load_state(rec)
    assert dev._timer is not None and dev._timer.pending
    assert dev._timer.deadline - dev.vm_clock.now_ns() == 10_000


def test_codec_refuses_malformed_bytes() -> None:
    data = codec.encode({"a": [1, -2, b"x", "y", None, True, 1 << 70]})
    assert codec.decode(data) == {"a": [1, -2, b"x", "y", None, True, 1 << 70]}
    for bad in (data[:-1], data + b"\0", b"\xff", b"L\xff\xff\xff\x0f"):
        with pytest.raises(StateError):
            codec.decode(bad)

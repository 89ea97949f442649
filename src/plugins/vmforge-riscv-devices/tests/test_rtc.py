"""Goldfish RTC: time with the latched high half, guest-set time, the alarm on
machine timers, interrupt enable and clear."""

from __future__ import annotations

import pytest

from vmforge_riscv_devices import GoldfishRtc
from vmforge_riscv_devices.goldfish_rtc import (
    ALARM_HIGH,
    ALARM_LOW,
    ALARM_STATUS,
    CLEAR_ALARM,
    CLEAR_INTERRUPT,
    IRQ_ENABLED,
    TIME_HIGH,
    TIME_LOW,
)

BASE = 0x101000  # where the virt board puts it
IRQ = 11  # its PLIC source there
EPOCH = 1_700_000_000 * 10**9  # the "wall clock" when the board was built


class Recorder:
    def __init__(self) -> None:
        self.level = False
        self.events: list[bool] = []

    def __call__(self, number: int, level: bool) -> None:
        self.level = level
        self.events.append(level)


@pytest.fixture
def rig(board):
    rtc = GoldfishRtc(clock="vm", wall_ns=lambda: EPOCH)
    board.add_device(rtc, BASE)
    irq = Recorder()
    rtc.irq.connect(irq, IRQ)
    return board, rtc, irq


def read_time(space) -> int:
    low = space.read(BASE + TIME_LOW, 4)
    return space.read(BASE + TIME_HIGH, 4) << 32 | low


def set_alarm(space, when: int) -> None:
    space.write(BASE + ALARM_HIGH, 4, when >> 32)
    space.write(BASE + ALARM_LOW, 4, when & 0xFFFFFFFF)


def test_time_follows_the_vm_clock(rig):
    machine, _, _ = rig
    assert read_time(machine.space) == EPOCH
    machine.clock.advance(123_456_789)
    assert read_time(machine.space) == EPOCH + 123_456_789


def test_high_half_is_latched_by_reading_low(rig):
    machine, _, _ = rig
    space = machine.space
    space.read(BASE + TIME_LOW, 4)
    before = space.read(BASE + TIME_HIGH, 4)
    machine.clock.advance(1 << 33)  # the high half moves on...
    assert space.read(BASE + TIME_HIGH, 4) == before  # ...not until TIME_LOW is read
    space.read(BASE + TIME_LOW, 4)
    assert space.read(BASE + TIME_HIGH, 4) == before + 2


def test_guest_sets_the_time(rig):
    machine, _, _ = rig
    space = machine.space
    target = 1_800_000_000 * 10**9 + 5
    space.write(BASE + TIME_HIGH, 4, target >> 32)
    space.write(BASE + TIME_LOW, 4, target & 0xFFFFFFFF)
    assert read_time(space) == target
    machine.clock.advance(1000)
    assert read_time(space) == target + 1000


def test_alarm_fires_on_the_machine_timer(rig):
    machine, _, irq = rig
    space = machine.space
    space.write(BASE + IRQ_ENABLED, 4, 1)
    set_alarm(space, EPOCH + 5_000_000)
    assert space.read(BASE + ALARM_STATUS, 4) == 1
    assert space.read(BASE + ALARM_LOW, 4) == (EPOCH + 5_000_000) & 0xFFFFFFFF
    assert space.read(BASE + ALARM_HIGH, 4) == (EPOCH + 5_000_000) >> 32
    assert machine.timers.next_deadline() == 5_000_000
    machine.clock.advance(4_999_999)
    machine.timers.run_due()
    assert not irq.level
    machine.clock.advance(1)
    assert machine.timers.run_due() == 1
    assert irq.level
    assert space.read(BASE + ALARM_STATUS, 4) == 0
    space.write(BASE + CLEAR_INTERRUPT, 4, 1)
    assert not irq.level


def test_interrupt_waits_for_irq_enabled(rig):
    machine, _, irq = rig
    space = machine.space
    set_alarm(space, EPOCH - 1)  # in the past: fires at once
    assert space.read(BASE + ALARM_STATUS, 4) == 0
    assert not irq.level
    space.write(BASE + IRQ_ENABLED, 4, 3)
    assert space.read(BASE + IRQ_ENABLED, 4) == 1
    assert irq.level
    space.write(BASE + IRQ_ENABLED, 4, 0)
    assert not irq.level


def test_clear_alarm_cancels(rig):
    machine, _, irq = rig
    space = machine.space
    space.write(BASE + IRQ_ENABLED, 4, 1)
    set_alarm(space, EPOCH + 1000)
    space.write(BASE + CLEAR_ALARM, 4, 1)
    assert space.read(BASE + ALARM_STATUS, 4) == 0
    machine.clock.advance(10**6)
    machine.timers.run_due()
    assert not irq.level and irq.events == []


def test_reset(rig):
    machine, rtc, irq = rig
    space = machine.space
    space.write(BASE + IRQ_ENABLED, 4, 1)
    set_alarm(space, EPOCH)
    assert irq.level
    set_alarm(space, EPOCH + 10**9)
    rtc.reset()
    assert not irq.level
    assert space.read(BASE + IRQ_ENABLED, 4) == 0
    assert space.read(BASE + ALARM_LOW, 4) == 0 and space.read(BASE + ALARM_STATUS, 4) == 0
    assert machine.timers.next_deadline() is None
    assert read_time(space) == EPOCH  # the time itself survives a reset


def test_bad_guest_input_is_ignored(rig):
    machine, _, _irq = rig
    space = machine.space
    for off in (0x20, 0x24, 0x800, 0xFFC):
        space.write(BASE + off, 4, 0xFFFFFFFF)
        assert space.read(BASE + off, 4) == 0
    space.write(BASE + IRQ_ENABLED, 8, 1)  # 32-bit registers only
    space.write(BASE + IRQ_ENABLED, 1, 1)
    assert space.read(BASE + IRQ_ENABLED, 4) == 0
    assert read_time(space) == EPOCH


def test_host_clock_is_wall_time_with_guest_offset(board):
    wall = [EPOCH]
    rtc = GoldfishRtc(wall_ns=lambda: wall[0])
    board.add_device(rtc, BASE)
    space = board.space
    assert read_time(space) == EPOCH
    wall[0] += 777
    assert read_time(space) == EPOCH + 777
    space.write(BASE + TIME_HIGH, 4, 0)
    space.write(BASE + TIME_LOW, 4, 1000)
    assert read_time(space) == 1000
    wall[0] += 5
    assert read_time(space) == 1005
    # the alarm becomes a guest-clock timer for the remaining distance
    space.write(BASE + IRQ_ENABLED, 4, 1)
    set_alarm(space, 3005)
    assert board.timers.next_deadline() == 2000


def test_real_host_clock_is_near_now():
    import time

    rtc = GoldfishRtc()
    t = rtc.read(TIME_LOW, 4) | rtc.read(TIME_HIGH, 4) << 32
    assert abs(t - time.time_ns()) < 10**9

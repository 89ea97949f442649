"""CLINT: mtime from the machine's clock at 10 MHz, mtimecmp deadlines fired by
the machine's timers (a paused clock advanced by hand), msip, 32/64-bit access."""

from __future__ import annotations

import pytest

from vmforge_riscv_devices import Clint
from vmforge_riscv_devices.clint import MTIME, MTIMECMP_BASE
from vmforge_riscv_devices.hart import MIP_MSIP, MIP_MTIP

BASE = 0x2000000  # where the virt board puts it
MSIP, MTIP = MIP_MSIP, MIP_MTIP
U64 = (1 << 64) - 1


@pytest.fixture
def rig(board, new_hart):
    clint = Clint(num_harts=2)
    board.add_device(clint, BASE)
    harts = [new_hart(), new_hart()]
    for i, h in enumerate(harts):
        clint.connect_hart(i, h)
    assert not board.clock.running
    return board, clint, harts


def cmp_addr(hart: int) -> int:
    return BASE + MTIMECMP_BASE + 8 * hart


def test_mtime_is_the_guest_clock_at_10mhz(rig):
    machine, clint, _ = rig
    space = machine.space
    assert space.read(BASE + MTIME, 8) == 0
    machine.clock.advance(1_234_567)
    assert space.read(BASE + MTIME, 8) == 12_345
    assert clint.mtime == 12_345
    machine.clock.advance(10 * 2**32 * 100)
    t = clint.mtime
    assert t > 2**32
    assert space.read(BASE + MTIME, 4) == t & 0xFFFFFFFF
    assert space.read(BASE + MTIME + 4, 4) == t >> 32


def test_timer_fires_at_the_deadline_through_machine_timers(rig):
    machine, clint, harts = rig
    space = machine.space
    machine.clock.advance(1000)  # mtime 10
    space.write(cmp_addr(0), 8, 60)
    assert not harts[0].bit(MTIP)
    assert machine.timers.next_deadline() == 6000  # mtime reaches 60 at 6000 ns
    machine.clock.advance(4999)
    assert machine.timers.run_due() == 0
    assert not harts[0].bit(MTIP)
    machine.clock.advance(1)
    assert machine.timers.run_due() == 1
    assert harts[0].bit(MTIP) and not harts[1].bit(MTIP)
    assert space.read(cmp_addr(0), 8) == 60
    # the handler moves mtimecmp ahead: MTIP drops, a new deadline is armed
    space.write(cmp_addr(0), 8, clint.mtime + 100)
    assert not harts[0].bit(MTIP)
    assert machine.timers.next_deadline() == 6000 + 100 * 100


def test_deadline_in_the_past_raises_at_once(rig):
    machine, _clint, harts = rig
    machine.clock.advance(500_000)
    machine.space.write(cmp_addr(1), 8, 5)
    assert harts[1].bit(MTIP)
    assert machine.timers.next_deadline() is None
    machine.space.write(cmp_addr(1), 8, U64)  # "never", as OpenSBI writes to stop it
    assert not harts[1].bit(MTIP)
    machine.clock.advance(10**12)
    machine.timers.run_due()
    assert not harts[1].bit(MTIP)


def test_32bit_halves_as_rv32_software_writes_them(rig):
    machine, _clint, harts = rig
    space = machine.space
    space.write(cmp_addr(0) + 4, 4, 0xFFFFFFFF)  # high first: no spurious interrupt
    space.write(cmp_addr(0), 4, 0x200)
    space.write(cmp_addr(0) + 4, 4, 0)
    assert space.read(cmp_addr(0), 8) == 0x200
    assert space.read(cmp_addr(0), 4) == 0x200
    assert space.read(cmp_addr(0) + 4, 4) == 0
    assert not harts[0].bit(MTIP)
    machine.clock.advance(0x200 * 100)
    machine.timers.run_due()
    assert harts[0].bit(MTIP)


def test_writing_mtime_moves_time_and_reevaluates(rig):
    machine, clint, harts = rig
    space = machine.space
    space.write(cmp_addr(0), 8, 1000)
    space.write(cmp_addr(1), 8, 1 << 40)
    space.write(BASE + MTIME, 8, 5000)
    assert clint.mtime == 5000
    assert harts[0].bit(MTIP) and not harts[1].bit(MTIP)
    machine.clock.advance(300)
    assert space.read(BASE + MTIME, 8) == 5003
    space.write(BASE + MTIME + 4, 4, 1 << 8)  # high half: mtime = 2**40 + low
    assert clint.mtime >> 32 == 1 << 8
    assert harts[1].bit(MTIP)


def test_msip_per_hart(rig):
    machine, _, harts = rig
    space = machine.space
    space.write(BASE + 4, 4, 1)
    assert harts[1].bit(MSIP) and not harts[0].bit(MSIP)
    assert space.read(BASE + 4, 4) == 1 and space.read(BASE, 4) == 0
    space.write(BASE + 4, 4, 0xFFFFFFFE)  # only bit 0 counts
    assert not harts[1].bit(MSIP)
    space.write(BASE, 4, 1)
    assert harts[0].bit(MSIP)


def test_bad_guest_input_is_ignored(rig):
    machine, _clint, harts = rig
    space = machine.space
    space.write(BASE + 8, 4, 1)  # msip of hart 2: not there
    assert space.read(BASE + 8, 4) == 0
    space.write(BASE, 8, 1)  # msip takes 32-bit accesses only
    assert not harts[0].bit(MSIP)
    space.write(BASE + 2, 4, 1)  # unaligned: refused by the decoder
    space.write(BASE, 1, 1)  # too narrow
    assert harts[0].mip == 0 and harts[1].mip == 0
    space.write(cmp_addr(2), 8, 0)  # mtimecmp of hart 2: not there
    assert space.read(cmp_addr(2), 8) == 0
    assert space.read(BASE + 0x8000, 8) == 0
    space.write(BASE + 0xFFF8, 8, 123)
    assert harts[0].mip == 0 and harts[1].mip == 0


def test_reset_drops_interrupts_and_deadlines(rig):
    machine, clint, harts = rig
    space = machine.space
    space.write(BASE, 4, 1)
    space.write(cmp_addr(1), 8, 0)
    space.write(cmp_addr(0), 8, 1000)
    assert harts[0].bit(MSIP) and harts[1].bit(MTIP)
    clint.reset()
    assert harts[0].mip == 0 and harts[1].mip == 0
    assert space.read(cmp_addr(0), 8) == 0
    machine.clock.advance(10**9)
    assert machine.timers.run_due() == 0
    assert harts[0].mip == 0


def test_bare_clint_with_its_own_clock(new_hart):
    from vmforge.clock import TimerQueue, VirtualClock

    clock = VirtualClock()
    timers = TimerQueue(clock)
    clint = Clint(clock=clock, timers=timers, timebase_freq=1_000_000)  # 1 MHz
    hart = new_hart()
    clint.connect_hart(0, hart)
    clint.write(MTIMECMP_BASE, 8, 3)
    assert timers.next_deadline() == 3000
    clock.advance(3000)
    timers.run_due()
    assert hart.bit(MTIP)

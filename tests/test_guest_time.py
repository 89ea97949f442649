"""Guest time: host time by default (a guest second is a host second), QEMU's
``-icount`` as the instruction-counted option, stopped timers, pauses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vmforge.accel.cluster import NEVER, HartCluster, HartMachine
from vmforge.clock import Icount
from vmforge.config import MachineConfig
from vmforge.memory import AddressSpace

from .test_cluster import RAM, TIMER_PROGRAM, assemble

SPIN = bytes.fromhex("01a0")          # c.j 0: an endless loop


def cluster_on(program: bytes, n: int = 1) -> HartCluster:
    space = AddressSpace()
    space.add_ram(RAM, 1 << 16)
    space.memory.write(RAM, program)
    cluster = HartCluster(space, n, slice_instructions=20_000)
    cluster.reset(RAM)
    return cluster


def test_host_time_follows_the_host_clock_not_instructions() -> None:
    cluster = cluster_on(SPIN)
    cluster.use_host_time(time.monotonic_ns(), tick_ns=100)
    t0, m0 = time.monotonic(), cluster.mtime
    while time.monotonic() - t0 < 0.3:
        cluster.run_slice()                     # millions of instructions
    elapsed_ticks = cluster.mtime - m0
    host_ticks = (time.monotonic() - t0) * 10_000_000
    assert cluster.total_instructions > 100_000
    assert 0.9 * host_ticks <= elapsed_ticks <= 1.1 * host_ticks + 10_000


def test_host_time_timer_fires_at_the_deadline_not_before(tmp_path: Path) -> None:
    cluster = cluster_on(assemble(TIMER_PROGRAM, tmp_path))
    cluster.use_host_time(time.monotonic_ns(), tick_ns=100)
    hart = cluster.harts[0]
    hart.mtimecmp = cluster.mtime + 2_000_000      # 0.2 s
    assert cluster.run_slice() is True             # wfi: halted, nothing due yet
    delay = cluster.idle_delay_ns()
    assert delay is not None and 0 < delay <= 200_000_000
    assert hart.x[28] != 0x5678
    time.sleep(delay / 1e9)
    assert cluster.run_slice() is False or hart.x[28] == 0x5678
    for _ in range(5):
        cluster.run_slice()
    assert hart.x[28] == 0x5678, "the timer interrupt was taken once it was due"


def test_a_stopped_timer_is_no_deadline(tmp_path: Path) -> None:
    cluster = cluster_on(assemble(TIMER_PROGRAM, tmp_path))
    cluster.use_host_time(time.monotonic_ns())
    cluster.harts[0].mtimecmp = NEVER
    cluster.run_slice()
    assert cluster.run_slice() is True
    assert cluster.idle_delay_ns() is None


@pytest.mark.parametrize("shift", [0, 3, 7])
def test_icount_counts_instructions(shift: int) -> None:
    cluster = cluster_on(SPIN)
    mul, div = Icount(shift).ticks_per_instruction(100)
    cluster.use_icount(mul, div)
    for _ in range(5):
        cluster.run_slice()
    n = cluster.harts[0].instret
    assert cluster.mtime == n * (1 << shift) // 100


def test_icount_sleep_on_waits_in_host_time(tmp_path: Path) -> None:
    cluster = cluster_on(assemble(TIMER_PROGRAM, tmp_path))
    cluster.use_icount(1, 100, warp_idle=False)
    hart = cluster.harts[0]
    hart.mtimecmp = 1_000_000
    assert cluster.run_slice() is True
    assert cluster.mtime < 1_000_000, "sleep=on: no jump while idle"
    cluster.advance_idle(40_000_000)               # 40 ms passed of 100
    assert 400_000 <= cluster.mtime < 1_000_000
    cluster.advance_idle(10**9)                    # more than needed: stops at the deadline
    assert cluster.mtime == 1_000_000
    cluster.run_slice()
    assert hart.x[28] == 0x5678


class SpinMachine(HartMachine):
    name = "spin-test"
    max_cpus = 2

    def build(self) -> None:
        self.add_ram(RAM, 1 << 16)
        self.space.memory.write(RAM, SPIN)
        self.reset_pc = RAM
        self.make_cluster(slice_instructions=50_000)


def test_machine_time_is_the_machine_clock_and_stands_still_when_paused() -> None:
    m = SpinMachine(MachineConfig(machine="spin-test", smp=2, serial=["none"]))
    m.start()
    try:
        time.sleep(0.3)
        m.pause()
        time.sleep(0.05)
        frozen = m.cluster.mtime
        time.sleep(0.3)                            # paused: guest time stands still
        assert m.cluster.mtime == frozen
        guest_ns = m.clock.now_ns()
        assert abs(frozen * 100 - guest_ns) < 20_000_000, "harts read the machine's clock"
        m.resume()
        time.sleep(0.2)
        assert m.cluster.mtime - frozen < 0.5 * 10_000_000
        assert m.cluster.mtime > frozen
    finally:
        m.stop()


def test_machine_icount_option() -> None:
    m = SpinMachine(MachineConfig(machine="spin-test", icount=Icount(4, sleep=False),
                                  serial=["none"]))
    m.realize()
    assert not m.cluster.host_time
    m.run_cpus()
    hart = m.cluster.harts[0]
    assert m.cluster.mtime == hart.instret * 16 // 100

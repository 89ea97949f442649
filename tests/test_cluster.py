"""HartCluster: slices over several harts, WFI wake-ups, shared time, idle warp."""

from __future__ import annotations

from pathlib import Path

from vmforge.accel.cluster import HartCluster
from vmforge.memory import AddressSpace
from vmforge.testing.riscv_asm import assemble

RAM = 0x8000_0000
IPI = 0x1000_0000

# hart 0 waits for a software interrupt; hart 1 pokes the IPI device, then waits
IPI_PROGRAM = """
    li t0, 8
    csrs mie, t0
    bnez a0, 1f
0:  wfi
    csrr t2, mip
    andi t2, t2, 8
    beqz t2, 0b
    li t3, 0x1234
3:  j 3b
1:  li t1, 0x10000000
    sw t0, 0(t1)
2:  wfi
    j 2b
"""

# every hart arms its timer and waits; the cluster warps time to the deadline
TIMER_PROGRAM = """
    li t0, 0x80
    csrs mie, t0
0:  wfi
    csrr t2, mip
    andi t2, t2, 0x80
    beqz t2, 0b
    li t3, 0x5678
    csrc mie, t0
3:  wfi
    j 3b
"""


class IpiDevice:
    """A write sends hart 0 a machine software interrupt."""

    def __init__(self) -> None:
        self.cluster: HartCluster | None = None

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        assert self.cluster is not None
        self.cluster.harts[0].set_irq_line(3, True)


def make(program: bytes, n: int) -> tuple[HartCluster, IpiDevice]:
    space = AddressSpace()
    space.add_ram(RAM, 1 << 16)
    dev = IpiDevice()
    space.add_mmio(IPI, dev, 0x100)
    space.memory.write(RAM, program)
    cluster = HartCluster(space, n, slice_instructions=1000)
    dev.cluster = cluster
    cluster.reset(RAM)
    return cluster, dev


def test_a_hart_woken_by_a_later_hart_is_not_left_halted(tmp_path: Path) -> None:
    cluster, _ = make(assemble(IPI_PROGRAM, tmp_path), 2)
    # round 1: hart 0 halts in wfi, then hart 1 sends it the IPI and halts
    assert cluster.run_slice() is False
    assert cluster.halted == [False, True]
    cluster.run_slice()
    assert cluster.harts[0].x[28] == 0x1234, "hart 0 saw its interrupt"


def test_idle_cluster_warps_to_the_next_timer(tmp_path: Path) -> None:
    cluster, _ = make(assemble(TIMER_PROGRAM, tmp_path), 2)
    for h, deadline in zip(cluster.harts, (5_000_000, 7_000_000), strict=True):
        h.mtimecmp = deadline
    for _ in range(10):
        cluster.run_slice()
    assert cluster.mtime >= 7_000_000 > 1_000_000 > cluster.total_instructions
    assert [h.x[28] for h in cluster.harts] == [0x5678, 0x5678]
    assert len({h.mtime for h in cluster.harts}) == 1, "harts share one time"


def test_nothing_armed_means_halted(tmp_path: Path) -> None:
    cluster, _ = make(assemble(TIMER_PROGRAM, tmp_path), 1)
    cluster.run_slice()
    assert cluster.run_slice() is True
    assert cluster.mtime < 100


def test_a_timer_due_since_the_harts_halted_is_no_wait(tmp_path: Path) -> None:
    """The harts were found halted, then the clock passed an armed timer before the
    machine asked how long to sleep: 0 (run them now), not None (nothing armed: the
    machine slept until another event, up to ``--timeout``, with the hart's
    interrupt pending; seen as a Linux guest hanging after ``poweroff -f``)."""
    cluster, _ = make(assemble(TIMER_PROGRAM, tmp_path), 1)
    cluster.warp_idle = False                           # (time as the host's: no warp)
    hart = cluster.harts[0]
    hart.mtimecmp = 50_000_000
    cluster.run_slice()
    assert cluster.run_slice() is True                  # in wfi, the timer ahead
    assert cluster.idle_delay_ns() == (50_000_000 - cluster.mtime) * cluster.tick_ns
    hart.mtimecmp = cluster.mtime                       # as if time had run on to it
    assert cluster.idle_delay_ns() == 0
    hart.set_csr("mie", 0)
    assert cluster.idle_delay_ns() is None              # disarmed: nothing to wait for

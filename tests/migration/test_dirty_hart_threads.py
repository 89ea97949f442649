"""The dirty log with harts on host threads (``thread=multi``): a hart re-arms its
write TLB for the log only when a run of its own begins, so the log parks the
hart threads (``quiesce``) before it starts, stops or is taken; a page a hart
keeps writing is in every take.  Without that, a hart in the middle of a long
run goes on storing through entries armed before the take, and the pages it
writes are missing from the log: a live migration would leave them stale on
the destination."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from vmforge.accel.cluster import HartCluster
from vmforge.accel.mttcg import HartThreads
from vmforge.memory import AddressSpace
from vmforge.migration.dirty import PAGE_SIZE, DirtyLog
from vmforge.testing.riscv_asm import assemble

RAM = 0x8000_0000
DATA = RAM + 0x10000

# each hart stores a rising count into its own page, for good
WRITER = f"""
    li s0, {DATA:#x}
    slli t0, a0, 12
    add s0, s0, t0
    li t1, 0
0:  addi t1, t1, 1
    sd t1, 0(s0)
    j 0b
"""


def _cluster(n: int, tmp_path: Path) -> HartCluster:
    space = AddressSpace()
    space.add_ram(RAM, 1 << 20)
    space.memory.write(RAM, assemble(WRITER, tmp_path))
    # one run of a hart never ends by itself: only a stop request ends it
    cluster = HartCluster(space, n, slice_instructions=1 << 62)
    cluster.use_host_time(time.monotonic_ns())
    cluster.reset(RAM)
    return cluster


def _counter(cluster: HartCluster, i: int) -> int:
    data = cluster.harts[0].space.memory.read(DATA + i * PAGE_SIZE, 8)
    return int.from_bytes(data, "little")


def _running(threads: HartThreads, cluster: HartCluster, n: int) -> None:
    """Start the threads (as the machine's loop does) and wait until each hart stored."""
    before = [_counter(cluster, i) for i in range(n)]
    threads.start()
    end = time.monotonic() + 60
    while any(_counter(cluster, i) == before[i] for i in range(n)):
        assert time.monotonic() < end, "the harts do not run"
        time.sleep(0.005)
    time.sleep(0.02)


def test_pages_hart_threads_write_are_in_every_take(tmp_path: Path) -> None:
    n = 2
    cluster = _cluster(n, tmp_path)
    threads = HartThreads(cluster, threading.RLock())
    log = DirtyLog(cluster.harts[0].space.memory, quiesce=threads.park)
    pages = [DATA + i * PAGE_SIZE for i in range(n)]
    try:
        _running(threads, cluster, n)
        log.start()                 # while the harts are mid-run
        for _ in range(4):
            _running(threads, cluster, n)
            taken = log.take()
            assert set(pages) <= set(taken), (
                f"pages the harts kept writing are missing from the log: "
                f"{sorted(set(pages) - set(taken))}")
        log.stop()
    finally:
        threads.park()
    threads.raise_error()


def test_live_migration_logs_through_the_machines_park(tmp_path: Path) -> None:
    """The live migration's log of an interpreted machine parks its hart threads."""
    from vmforge.migration.live import MigrationInfo, _Outgoing

    class Machine:
        parked = 0

        class space:
            memory = AddressSpace().memory

        def park_cpus(self) -> None:
            Machine.parked += 1

    out = _Outgoing(Machine(), MigrationInfo(), None)
    out.log.start()
    out.log.take()
    out.log.stop()
    assert Machine.parked == 3

"""Harts on host threads (``-accel interp,thread=multi``, vmforge.accel.mttcg):
AMOs and LR/SC stay atomic while harts really run at once, fences, a parked
hart wakes on an interrupt, and the threads stop when asked."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from vmforge.accel.cluster import HartCluster
from vmforge.accel.mttcg import HartThreads
from vmforge.accel.options import accel_thread_option
from vmforge.memory import AddressSpace
from vmforge.testing.riscv_asm import assemble

RAM = 0x8000_0000
DATA = RAM + 0x8000         # counters: +0 amoadd, +8 LR/SC, +16 plain (racy), +64.. done flags
ROUNDS = 200_000

# each hart adds 1 to three counters ROUNDS times: by amoadd.d, by an LR/SC loop
# and by a plain load/add/store (which loses updates when harts run at once);
# then it sets its done flag and waits in wfi for good
COUNTERS = f"""
    li s0, {DATA:#x}
    li s1, {ROUNDS}
    li t0, 1
0:  amoadd.d zero, t0, (s0)
    addi t2, s0, 8
1:  lr.d t1, (t2)
    addi t1, t1, 1
    sc.d t3, t1, (t2)
    bnez t3, 1b
    ld t1, 16(s0)
    addi t1, t1, 1
    sd t1, 16(s0)
    addi s1, s1, -1
    bnez s1, 0b
    fence rw, rw
    slli t4, a0, 3
    add t4, t4, s0
    sd t0, 64(t4)
2:  wfi
    j 2b
"""


def cluster_of(source: str, n: int, tmp_path: Path) -> HartCluster:
    space = AddressSpace()
    space.add_ram(RAM, 1 << 16)
    space.memory.write(RAM, assemble(source, tmp_path))
    cluster = HartCluster(space, n, slice_instructions=50_000)
    cluster.use_host_time(time.monotonic_ns())
    cluster.reset(RAM)
    return cluster


def wait_for(cond, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "the harts did not get there"
        time.sleep(0.01)


def word(cluster: HartCluster, addr: int) -> int:
    return int.from_bytes(cluster.harts[0].space.memory.read(addr, 8), "little")


def run_until_flagged(cluster: HartCluster, flags: int) -> HartThreads:
    """Run every hart on a thread of its own until each has set its doubleword at
    ``flags`` (hart i: flags + 8 * i); the threads parked, their error raised."""
    threads = HartThreads(cluster, threading.RLock())
    threads.start()
    try:
        wait_for(lambda: all(word(cluster, flags + 8 * i) for i in range(len(cluster.harts))))
    finally:
        threads.park()
    threads.raise_error()
    return threads


def test_amo_and_lr_sc_are_atomic_across_hart_threads(tmp_path: Path) -> None:
    n = 2
    cluster = cluster_of(COUNTERS, n, tmp_path)
    threads = run_until_flagged(cluster, DATA + 64)
    assert word(cluster, DATA) == n * ROUNDS, "amoadd.d lost no update"
    assert word(cluster, DATA + 8) == n * ROUNDS, "lr.d/sc.d lost no update"
    assert not threads.running


# each hart tries ROUNDS times to move a counter from the value it read to the next
# by amomaxu.d, and counts the tries whose old value was the one it read (its move
# took): with the compare-and-swap loop of compiled AMOs atomic, every step of the
# counter is one hart's success, so the successes add up to the counter
MAX_STEPS = f"""
    li s0, {DATA + 32:#x}
    li s1, {ROUNDS}
    li s2, 0
    li t0, 1
0:  ld t1, 0(s0)
    addi t2, t1, 1
    amomaxu.d t3, t2, (s0)
    bne t3, t1, 1f
    addi s2, s2, 1
1:  addi s1, s1, -1
    bnez s1, 0b
    slli t4, a0, 3
    add t4, t4, s0
    sd s2, 64(t4)
    fence rw, rw
    sd t0, 128(t4)
2:  wfi
    j 2b
"""


def test_a_compare_and_swap_amo_is_atomic_across_hart_threads(tmp_path: Path) -> None:
    n = 2
    cluster = cluster_of(MAX_STEPS, n, tmp_path)
    run_until_flagged(cluster, DATA + 32 + 128)
    steps = word(cluster, DATA + 32)
    wins = [word(cluster, DATA + 32 + 64 + 8 * i) for i in range(n)]
    assert 0 < steps <= n * ROUNDS
    assert sum(wins) == steps, f"{wins} successes for {steps} steps: an amomaxu was lost"


# hart 0 waits in wfi for a machine software interrupt, then counts up at DATA+24;
# hart 1 writes to a device that raises an exception
WAKE = f"""
    li s0, {DATA:#x}
    bnez a0, 3f
    li t0, 8
    csrs mie, t0
0:  wfi
    csrr t2, mip
    andi t2, t2, 8
    beqz t2, 0b
1:  ld t1, 24(s0)
    addi t1, t1, 1
    sd t1, 24(s0)
    j 1b
3:  li t1, 0x10000000
    sw zero, 0(t1)
4:  j 4b
"""


class Failing:
    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        raise RuntimeError("the device broke")


def test_a_hart_parked_in_wfi_wakes_and_a_device_error_ends_the_threads(
        tmp_path: Path) -> None:
    cluster = cluster_of(WAKE, 2, tmp_path)
    cluster.harts[0].space.add_mmio(0x1000_0000, Failing(), 0x100)
    failures: list[BaseException] = []
    threads = HartThreads(cluster, threading.RLock(), failures.append)
    threads.start()
    try:
        wait_for(lambda: failures)
        assert str(failures[0]) == "the device broke"
        with pytest.raises(RuntimeError, match="the device broke"):
            threads.raise_error()
        threads.park()
        assert word(cluster, DATA + 24) == 0, "hart 0 sleeps in wfi"
        assert cluster.halted[0]
        cluster.harts[1].pc = cluster.harts[1].pc + 4     # past the failing store: j 4b
        threads.start()
        cluster.harts[0].set_irq_line(3, True)
        wait_for(lambda: word(cluster, DATA + 24) > 1000)
    finally:
        threads.park()
    assert not threads.running
    counted = word(cluster, DATA + 24)
    time.sleep(0.05)
    assert word(cluster, DATA + 24) == counted, "parked harts run no more"


@pytest.mark.parametrize(("text", "want"), [
    ("interp", None), ("interp,thread=multi", "multi"), ("interp,thread=single", "single"),
])
def test_accel_thread_option(text: str, want: str | None) -> None:
    assert accel_thread_option(text) == want


def test_accel_thread_option_errors_as_qemu() -> None:
    import subprocess

    from vmforge.testing.oracles import require_program

    qemu = require_program("qemu-system-riscv64", "qemu-system-misc")
    out = subprocess.run([qemu, "-M", "none", "-accel", "tcg,thread=bogus"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    qemu_says = out.stderr.strip().rsplit(": ", 1)[1]
    with pytest.raises(ValueError) as exc:
        accel_thread_option("interp,thread=bogus")
    assert str(exc.value) == f"-accel interp,thread=bogus: {qemu_says}"
    with pytest.raises(ValueError, match=r"Property 'kvm-accel\.thread' not found"):
        accel_thread_option("kvm,thread=multi")


DEV = 0x1000_0000
DEV_ROUNDS = 3000

# each hart adds 1 to a device register DEV_ROUNDS times by amoadd.w, then sets its
# done flag and waits in wfi for good
DEVICE_AMO = f"""
    li s0, {DEV:#x}
    li s1, {DEV_ROUNDS}
    li t0, 1
0:  amoadd.w zero, t0, (s0)
    addi s1, s1, -1
    bnez s1, 0b
    li s2, {DATA:#x}
    slli t4, a0, 3
    add t4, t4, s2
    fence rw, rw
    sd t0, 64(t4)
2:  wfi
    j 2b
"""


class Register:
    """A device register whose read and write let other threads run in between
    (as any device model in Python may, when it waits for a lock or for I/O)."""

    def __init__(self) -> None:
        self.value = 0

    def read(self, offset: int, size: int) -> int:
        time.sleep(0)               # the GIL goes to another thread here
        return self.value

    def write(self, offset: int, size: int, value: int) -> None:
        self.value = value


def test_an_amo_on_device_memory_is_one_section_of_the_big_lock(tmp_path: Path) -> None:
    n = 2
    cluster = cluster_of(DEVICE_AMO, n, tmp_path)
    register = Register()
    cluster.harts[0].space.add_mmio(DEV, register, 0x100)
    threads = HartThreads(cluster, threading.RLock())
    threads.start()
    try:
        wait_for(lambda: all(word(cluster, DATA + 64 + 8 * i) for i in range(n)))
    finally:
        threads.park()
    threads.raise_error()
    assert register.value == n * DEV_ROUNDS, "another hart's access came between an AMO's " \
        "read and write of the device"


SPIN = """
    li t0, 0
1:  addi t0, t0, 1
    j 1b
"""


def test_park_ends_a_run_that_began_just_as_the_stop_was_asked(tmp_path: Path) -> None:
    """A hart thread that read "not stopping" and entered ``run`` only after
    :meth:`HartThreads.stop` had asked its hart (the run starts with no stop
    requested, and a slice here never ends): ``park`` still ends it."""
    cluster = cluster_of(SPIN, 1, tmp_path)
    cluster.slice_instructions = 1 << 62
    hart = cluster.harts[0]
    entered, asked = threading.Event(), threading.Event()
    run = hart.run

    def late_run(budget: int):
        entered.set()
        asked.wait(10)              # the stop request comes here, before the run
        return run(budget)

    hart.run = late_run
    threads = HartThreads(cluster, threading.RLock())
    threads.start()
    assert entered.wait(10)
    stop = threads.stop

    def stop_then_let_run() -> None:
        stop()
        asked.set()

    threads.stop = stop_then_let_run
    parker = threading.Thread(target=threads.park, daemon=True)
    parker.start()
    parker.join(10)
    alive = parker.is_alive()
    if alive:                       # (end the thread the old park left running)
        threads.stop = stop
        while parker.is_alive():
            stop()
            parker.join(0.05)
    assert not alive, "park waited for a run that nobody asked to stop"
    assert not threads.running

"""``pause`` (Zihintpause), the hint of a spin-wait loop (Linux's ``cpu_relax``), and
``wfi`` with an interrupt already pending: spin-waits, where a hart on a host thread
gives its host CPU up (``sched_yield``).

It retires as a no-op, but it is not compiled away: the hart runs it (riscv_atomic.pxi,
pause_op), and a hart on a host thread of its own gives its host CPU up there, so
the hart the loop waits for (a lock's holder, a ticket lock's next in line) gets
it.  Before, a 2-hart Linux boot on a busy 2-core host retired 1.5 to 10 G
instructions spinning in ``do_raw_spin_lock`` beside the boot's 0.13 G.  ``pause``
never traps: unlike ``wfi`` it ignores mstatus.TW, in every privilege.  A ``wfi``
that waits for nothing (an interrupt pending, maybe disabled) is a spin-wait too:
OpenSBI's HSM wait, with an IPI left pending, loops through one until Linux starts
the hart (2-3 M instructions each 10 ms of a boot's first 0.3 s); after 64 of them
in a row (no trap between) each one sleeps 50 us instead.
"""

from __future__ import annotations

import pytest

from vmforge.accel.interp import StopReason

TRIPS = 300
PAUSE = ".4byte 0x0100000f"     # pause: fence w, 0
WFI_BITS = 0x10500073

LOOP = rf"""
    li s2, {TRIPS}
    li a0, 0
1:  addi a0, a0, 2
    {PAUSE}
    fence rw, rw
    addi s2, s2, -1
    bnez s2, 1b
    ebreak
"""

# S-mode with mstatus.TW: pause goes on, wfi is an illegal instruction
S_MODE = rf"""
    la t0, s_code
    csrw mepc, t0
    li t0, (1 << 11) | (1 << 21)     # MPP = S, TW
    csrw mstatus, t0
    mret
s_code:
    {PAUSE}
    li a0, 7
    wfi
    ebreak
"""


def _to_ebreak(hart) -> None:
    res = hart.run(10_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res


@pytest.mark.parametrize("jit", [True, False])
def test_pause_runs_every_trip_of_a_hot_loop(rv_asm, rv_env, jit: bool) -> None:
    image, _ = rv_asm(LOOP)
    _space, hart = rv_env.make_machine(image)
    hart.jit = jit
    hart.stop_on = {3}
    _to_ebreak(hart)
    assert hart.x[10] == 2 * TRIPS
    assert hart._stats()["pauses"] == TRIPS, "pause was compiled away or fused"
    assert hart.instret == 2 + 5 * TRIPS
    if jit:
        assert hart._stats()["jit_regions"] > 0, "the loop was never compiled"


def test_pause_on_a_hart_thread_yields_and_goes_on(rv_asm, rv_env) -> None:
    image, _ = rv_asm(LOOP)
    _space, hart = rv_env.make_machine(image)
    hart.smp = 1            # as HartThreads sets it: the hart runs on a thread of its own
    hart.stop_on = {3}
    _to_ebreak(hart)
    assert hart.x[10] == 2 * TRIPS
    assert hart._stats()["pauses"] == TRIPS
    assert hart._stats()["yields"] == TRIPS


# MSIP pending and enabled in mie, mstatus.MIE clear: each wfi completes at once
WFI_LOOP = rf"""
    li t0, 8
    csrw mie, t0
    li s2, {TRIPS}
1:  wfi
    addi s2, s2, -1
    bnez s2, 1b
    ebreak
"""


# the same, with an ecall (a trap to the handler, which steps over it) after each wfi
WFI_TRAPS = rf"""
    la t0, handler
    csrw mtvec, t0
    li t0, 8
    csrw mie, t0
    li s2, {TRIPS}
1:  wfi
    ecall
    addi s2, s2, -1
    bnez s2, 1b
    ebreak
    .balign 4
handler:
    csrr t0, mepc
    addi t0, t0, 4
    csrw mepc, t0
    mret
"""


@pytest.mark.parametrize("smp", [0, 1])
def test_wfi_with_an_interrupt_pending_yields_on_a_hart_thread(rv_asm, rv_env, smp: int) -> None:
    image, _ = rv_asm(WFI_LOOP)
    _space, hart = rv_env.make_machine(image)
    hart.smp = smp
    hart.set_irq_line(3, True)
    hart.stop_on = {3}
    _to_ebreak(hart)
    assert hart.instret == 3 + 3 * TRIPS
    stats = hart._stats()
    # the first 64 in a row give the host CPU up, the rest sleep 50 us each
    assert (stats["yields"], stats["naps"]) == ((64, TRIPS - 64) if smp else (0, 0)), stats


def test_a_trap_between_wfis_starts_the_count_again(rv_asm, rv_env) -> None:
    image, _ = rv_asm(WFI_TRAPS)
    _space, hart = rv_env.make_machine(image)
    hart.smp = 1
    hart.set_irq_line(3, True)
    hart.stop_on = {3}
    _to_ebreak(hart)
    assert hart.x[18] == 0
    stats = hart._stats()
    assert (stats["yields"], stats["naps"]) == (TRIPS, 0), stats


def test_pause_ends_the_turn_of_harts_taking_turns_on_one_thread(rv_asm, rv_env) -> None:
    """Harts in a round robin on one thread (HartCluster sets ``pause_ends_run``):
    a pause ends run() at the next block boundary, so the hart a spin-wait waits
    for gets its turn now; the loop goes on where it stopped."""
    image, _ = rv_asm(LOOP)
    _space, hart = rv_env.make_machine(image)
    hart.pause_ends_run = 1
    hart.stop_on = {3}
    res = hart.run(10_000_000)
    assert res.reason is StopReason.REQUEST, res
    assert res.executed == 2 + 5          # li, li, one trip (stopped at its back-edge)
    turns = 1
    while res.reason is StopReason.REQUEST:
        res = hart.run(10_000_000)
        turns += 1
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert turns == TRIPS and hart.x[10] == 2 * TRIPS
    assert hart.instret == 2 + 5 * TRIPS


def test_a_cluster_of_several_harts_ends_turns_at_pause() -> None:
    from vmforge.accel.cluster import HartCluster
    from vmforge.memory import AddressSpace

    space = AddressSpace()
    space.add_ram(0x8000_0000, 1 << 20)
    assert [h.pause_ends_run for h in HartCluster(space, 2).harts] == [1, 1]
    assert HartCluster(space, 1).harts[0].pause_ends_run == 0


def test_pause_ignores_tw_where_wfi_traps(rv_asm, rv_env) -> None:
    image, _ = rv_asm(S_MODE)
    _space, hart = rv_env.make_machine(image)
    hart.stop_on = {2, 3}
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 2, res
    assert hart.priv == 1
    assert hart.x[10] == 7, "pause trapped or did not retire"
    assert res.tval == WFI_BITS
    assert hart._stats()["pauses"] == 1

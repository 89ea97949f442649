"""Read-TLB entries a refill pushes out are kept beside the TLB.

The read TLB is indexed by the page number's low 8 bits, so two pages 1 MiB apart
share a slot.  In the Linux guest the stack and a data page of busybox land there
by ASLR in some boots: a shell loop then refilled both 13 times a trip, each
refill a page walk and a way out of compiled code (260,000 walks a 20000-trip
loop); gzip's window and hash chains, a heap page and an mmap'd one, did the same
in one run in three.  A refill pushes the slot's entry into its second way
(rvict), and that one's into eight further victims (rfar); load_slow swaps a page
back in from either (riscv_mmu.pxi, victim_swap), and compiled loads read through
the second way where it is (riscv_jit_mem.pxi, victim_probe).  sfence.vma and
every flush forget them with the TLB.
"""

from __future__ import annotations

import pytest
from rv_sv39 import SV39_ENTER, SV39_PAGES_AB, SV39_ROOTS, SV39_TABLES

from vmforge.accel.interp import StopReason

TRIPS = 500

# Sv39.  0x80000000: identity gigapage.  0x40000000 -> page_a and 0x40100000 ->
# page_b (the same read-TLB slot), 0x40001000 -> page_c, 4 KiB pages through l1/l0.
PROGRAM = SV39_TABLES + r"""
    la t0, page_a; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7; sd t0, 0(s2)
    la t0, page_c; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7; sd t0, 8(s2)
    la t0, page_b; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7
    addi t1, s2, 2040; sd t0, 8(t1)                                   # l0[256]
""" + SV39_ENTER + rf"""
s_code:
    li a1, 0x40000000
    li a2, 0x40100000
    li s3, {TRIPS}
    li s4, 0
1:  ld a0, 0(a1)                # page_a: 0xaa
    ld a3, 0(a2)                # page_b: 0xbb, the same slot
    add s4, s4, a0
    add s4, s4, a3
    addi s3, s3, -1
    bnez s3, 1b
    ebreak
    ld a0, 0(a1)
    ld a3, 0(a2)                # page_a's entry now a victim
    la t0, page_c               # 0x40000000 -> page_c, that page fenced
    srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7; sd t0, 0(s2)
    sfence.vma a1
    ld a0, 0(a1)                # page_c: 0xcc
    ebreak
    ld a3, 0(a2)                # page_c's entry now a victim
    la t0, page_a               # back onto page_a, every TLB flushed
    srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7; sd t0, 0(s2)
    sfence.vma
    ld a0, 0(a1)                # page_a: 0xaa
    ebreak
""" + SV39_PAGES_AB + r"""
page_c: .dword 0xcc
    .balign 4096
""" + SV39_ROOTS


def _run(hart) -> None:
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res


def _ran(rv_asm, rv_env, program: str, jit: bool | None = None):
    """A hart that ran ``program`` to its first ebreak (compiling as ``jit`` says,
    else as the environment does)."""
    image, _ = rv_asm(program)
    _space, hart = rv_env.make_machine(image)
    if jit is not None:
        hart.jit = jit
    hart.stop_on = {3}
    _run(hart)
    return hart


@pytest.mark.parametrize("jit", [False, True], ids=["interpreter", "compiled"])
def test_two_pages_in_one_slot_do_not_walk_each_time(rv_asm, rv_env, jit):
    hart = _ran(rv_asm, rv_env, PROGRAM, jit)
    assert hart.x[20] == TRIPS * (0xaa + 0xbb)
    # before: every load missed and walked the page table; now load_slow swaps
    # page_a and page_b at each load (two hits a trip), and compiled code reads
    # page_b through the second way, page_a through the first (one a trip)
    stats = hart._stats()
    assert stats["tlb_fills"] < 20 and stats["tlb_flushes"] < 10, stats
    if jit:     # once compiled, without a call of load_slow
        assert stats["jit_victim_hits"] >= TRIPS - 50 and stats["jit_calls"] < 20, stats
    else:
        assert stats["victim_hits"] >= 2 * TRIPS - 10, stats


def test_victims_go_with_sfence_vma(rv_asm, rv_env):
    hart = _ran(rv_asm, rv_env, PROGRAM)
    hart.pc += 4
    _run(hart)
    assert hart.x[10] == 0xcc, "a victim kept the fenced page's old translation"
    hart.pc += 4
    _run(hart)
    assert hart.x[10] == 0xaa, "a victim outlived sfence.vma of every page"


# Three pages in one slot: 0x40200000 through l1[1] -> the same l0 (page_a again).
THREE = SV39_TABLES + r"""
    la t0, page_a; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7; sd t0, 0(s2)
    la t0, page_b; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7
    addi t1, s2, 2040; sd t0, 8(t1)                                   # l0[256]
    srli t0, s2, 12; slli t0, t0, 10; ori t0, t0, 1; sd t0, 8(s1)     # l1[1] -> l0
""" + SV39_ENTER + rf"""
s_code:
    li a1, 0x40000000
    li a2, 0x40100000
    li a4, 0x40200000
    li s3, {TRIPS}
    li s4, 0
1:  ld a0, 0(a1)
    ld a3, 0(a2)
    ld a5, 0(a4)
    add s4, s4, a0
    add s4, s4, a3
    add s4, s4, a5
    addi s3, s3, -1
    bnez s3, 1b
    ebreak
""" + SV39_PAGES_AB + SV39_ROOTS


@pytest.mark.parametrize("jit", [False, True], ids=["interpreter", "compiled"])
def test_three_pages_in_one_slot_do_not_walk_each_time(rv_asm, rv_env, jit):
    hart = _ran(rv_asm, rv_env, THREE, jit)
    assert hart.x[20] == TRIPS * (0xaa + 0xbb + 0xaa)
    stats = hart._stats()       # the third page comes back from rfar, not a walk
    assert stats["tlb_fills"] < 20 and stats["victim_hits"] >= TRIPS, stats


# Stores: the write TLB's second way (wvict).  M-mode, untranslated: f's page P and
# Q = P + 1 MiB share a write slot.  P is stored to before it holds code, its entry
# pushed into the second way by a store to Q, then f runs (P becomes code) and is
# patched through that entry: the patch must be seen (code_page flags the second
# way's entries too), and stores to P and Q in turn must not walk.
WRITES = r"""
    .option norvc
    la s0, f
    li t0, 0x100000
    add s1, s0, t0
    lw s5, 0(s0)                # f's first instruction: li a0, 11
    la t1, patch
    lw s6, 0(t1)                # li a0, 22
    li s3, {trips}
    li s4, 0
1:  sw s5, 0(s0)                # f as it was (the first time: P holds no code yet)
    sd zero, 0(s1)              # Q: P's write entry into the second way
    call f
    add s4, s4, a0
    sd zero, 0(s1)
    sw s6, 0(s0)                # patch f through the second way's entry
    call f
    add s4, s4, a0
    addi s3, s3, -1
    bnez s3, 1b
    ebreak
    .balign 4096
f:  li a0, 11
    ret
patch:
    li a0, 22
""".replace("{trips}", str(TRIPS))


@pytest.mark.parametrize("jit", [False, True], ids=["interpreter", "compiled"])
def test_stores_through_the_second_way_see_code(rv_asm, rv_env, jit):
    hart = _ran(rv_asm, rv_env, WRITES, jit)
    assert hart.x[20] == TRIPS * (11 + 22), "a patch went through a stale write entry"
    stats = hart._stats()
    assert stats["tlb_fills"] < 20, stats

"""Address spaces keep their translations across satp writes (riscv_tlb.pxi).

satp keeps 16 ASID bits, so Linux runs its ASID allocator: a context switch
writes satp and flushes nothing, and a change to an address space's mappings is
fenced with its ASID (``sfence.vma zero, asid``), running or not.  Each satp
value has a bank of U and "S with SUM" TLB sets; writing satp selects its bank, so
switching back and forth walks no page table.  The S sets are shared: a
translation there that is not global goes at a switch.  Before, every satp write
flushed every TLB (16,000 flushes and 600,000 walks in a 16 MiB `dd | md5sum`).
"""

from __future__ import annotations

import pytest
from rv_sv39 import SV39_ENTER, SV39_ROOTS, SV39_TABLES

from vmforge.accel.interp import StopReason

TRIPS = 100

# Two page tables: root (ASID 1) maps 0x40000000 to page_a, root2 (ASID 2) to
# page_b; both map 0x80000000 as a global identity gigapage (the code).  {pte}
# are the data pages' flags: user pages read by S with mstatus.SUM (banked
# sets), or supervisor pages that are not global (the shared S sets).
PROGRAM = SV39_TABLES + r"""
    li t0, (0x80000 << 10) | 0xef; sd t0, 16(s0)                      # global
    la t0, page_a; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, {pte}; sd t0, 0(s2)
    la a0, root2; la a1, l1b; la a2, l0b
    srli t0, a1, 12; slli t0, t0, 10; ori t0, t0, 1; sd t0, 8(a0)     # [1] -> l1b
    li t0, (0x80000 << 10) | 0xef; sd t0, 16(a0)
    srli t0, a2, 12; slli t0, t0, 10; ori t0, t0, 1; sd t0, 0(a1)     # l1b[0] -> l0b
    la t0, page_b; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, {pte}; sd t0, 0(a2)
""" + SV39_ENTER + r"""
s_code:
    li t0, {sum}; csrs sstatus, t0
    la t0, root; srli t0, t0, 12; li t1, (8 << 60) | (1 << 44); or s6, t0, t1
    la t0, root2; srli t0, t0, 12; li t1, (8 << 60) | (2 << 44); or s7, t0, t1
    li a1, 0x40000000
    csrw satp, s6; ld a0, 0(a1)         # ASID 1: page_a
    csrw satp, s7; ld a2, 0(a1)         # ASID 2: page_b, no sfence between
    csrw satp, s6; ld a3, 0(a1)         # ASID 1 again
    ebreak
    li s3, {trips}
1:  csrw satp, s7; ld a2, 0(a1)
    csrw satp, s6; ld a3, 0(a1)
    addi s3, s3, -1
    bnez s3, 1b
    ebreak
    csrw satp, s7                       # ASID 2 runs; ASID 1's page changes
    la t0, page_c; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, {pte}; sd t0, 0(s2)
    li t0, 1; sfence.vma zero, t0       # ... fenced by its ASID
    ld a2, 0(a1)                        # ASID 2: page_b still
    csrw satp, s6; ld a3, 0(a1)         # ASID 1: page_c
    ebreak
    csrw satp, s7                       # ASID 2 runs; ASID 1's page changes back
    la t0, page_a; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, {pte}; sd t0, 0(s2)
    sfence.vma a1                       # ... fenced by its address alone
    ld a2, 0(a1)                        # ASID 2: page_b
    csrw satp, s6; ld a3, 0(a1)         # ASID 1: page_a
    ebreak
    csrw satp, s7
    la t0, page_c; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, {pte}; sd t0, 0(s2)
    li t0, 1; sfence.vma a1, t0         # ... by its address and ASID
    ld a2, 0(a1)
    csrw satp, s6; ld a3, 0(a1)         # ASID 1: page_c
    ebreak
    csrw satp, s7
    la t0, page_a; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, {pte}; sd t0, 0(s2)
    sfence.vma a1                       # by its address, then 300 fences of others
    li s3, 300; li t1, 0x7000000; li t2, 1 << 12
fences:
    sfence.vma t1
    add t1, t1, t2; addi s3, s3, -1
    bnez s3, fences
    ld a2, 0(a1)
    csrw satp, s6; ld a3, 0(a1)         # ASID 1: page_a
    ebreak
    .balign 4096
page_a: .dword 0xaa
    .balign 4096
page_b: .dword 0xbb
    .balign 4096
page_c: .dword 0xcc
    .balign 4096
""" + SV39_ROOTS + r"""
root2: .fill 512, 8, 0
l1b: .fill 512, 8, 0
l0b: .fill 512, 8, 0
"""

USER = {"pte": "0xd7", "sum": "1 << 18"}        # V R W U A D, read with SUM
SUPERVISOR = {"pte": "0xc7", "sum": "0"}         # V R W A D: not global


def _run(hart) -> None:
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    hart.pc += 4


def _machine(rv_asm, rv_env, flags, jit):
    image, _ = rv_asm(PROGRAM.replace("{trips}", str(TRIPS)).replace("{pte}", flags["pte"])
                      .replace("{sum}", flags["sum"]))
    _space, hart = rv_env.make_machine(image)
    hart.jit = jit
    hart.stop_on = {3}
    return hart


@pytest.mark.parametrize("jit", [False, True], ids=["interpreter", "compiled"])
def test_switching_address_spaces_keeps_their_translations(rv_asm, rv_env, jit):
    hart = _machine(rv_asm, rv_env, USER, jit)
    assert hart.csr("satp") >> 44 & 0xFFFF == 0
    _run(hart)
    assert (hart.x[10], hart.x[12], hart.x[13]) == (0xaa, 0xbb, 0xaa)
    fills = hart._stats()["tlb_fills"]
    _run(hart)
    assert (hart.x[12], hart.x[13]) == (0xbb, 0xaa)
    stats = hart._stats()
    assert stats["tlb_fills"] - fills < 4, stats    # 200 switches, no walk
    assert hart.csr("satp") >> 44 & 0xFFFF == 1
    _run(hart)
    assert hart.x[12] == 0xbb, "a fence of ASID 1 lost ASID 2's translation"
    assert hart.x[13] == 0xcc, "ASID 1 kept a translation fenced by its ASID"
    _assert_page_fences(hart)


def _assert_page_fences(hart) -> None:
    """The program's page fences, made while ASID 2 runs, reach ASID 1's bank."""
    _run(hart)
    assert (hart.x[12], hart.x[13]) == (0xbb, 0xaa), "a fence of a page missed ASID 1"
    _run(hart)
    assert (hart.x[12], hart.x[13]) == (0xbb, 0xcc), "a fence of ASID 1's page missed it"
    _run(hart)
    assert (hart.x[12], hart.x[13]) == (0xbb, 0xaa), \
        "a fence of a page missed ASID 1 when 300 other fences followed it"


@pytest.mark.parametrize("jit", [False, True], ids=["interpreter", "compiled"])
def test_supervisor_translations_not_global_go_at_a_switch(rv_asm, rv_env, jit):
    hart = _machine(rv_asm, rv_env, SUPERVISOR, jit)
    _run(hart)
    assert (hart.x[10], hart.x[12], hart.x[13]) == (0xaa, 0xbb, 0xaa)
    _run(hart)
    assert (hart.x[12], hart.x[13]) == (0xbb, 0xaa)
    _run(hart)
    assert (hart.x[12], hart.x[13]) == (0xbb, 0xcc)
    _assert_page_fences(hart)

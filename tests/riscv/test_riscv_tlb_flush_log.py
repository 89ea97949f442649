"""A TLB flush forgets the entries filled since the last one (tlb_log), or every
entry when more were filled than the log holds (riscv_mmu.pxi, tlb_flush).

Linux writes satp and flushes at every context switch, a few dozen fills apart
(a ``dd | md5sum`` pipeline: 16,000 flushes), so a flush clears what was filled
rather than all 2816 entries.  Either way no translation may outlive it: the
program maps pages, reads them, remaps them, runs ``sfence.vma`` and reads again.
"""

from __future__ import annotations

import pytest
from rv_sv39 import SV39_ENTER, SV39_PAGES_AB, SV39_ROOTS, SV39_TABLES

from vmforge.accel.interp import StopReason

PAGES = 300         # more fills between two flushes than the log holds (256)


def _program(pages: int) -> str:
    """0x40000000 + i * 4 KiB -> page_a for i < ``pages``; each read (s4 = their sum);
    then entries 0 and pages - 1 -> page_b, sfence.vma, both read again (a0, a3)."""
    return SV39_TABLES + rf"""
    la t0, page_a; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7
    li t1, {pages}; mv t2, s2
1:  sd t0, 0(t2); addi t2, t2, 8; addi t1, t1, -1; bnez t1, 1b
""" + SV39_ENTER + rf"""
s_code:
    li a1, 0x40000000
    li s3, {pages}
    li s4, 0
    mv t2, a1
1:  ld a0, 0(t2)
    add s4, s4, a0
    li t0, 4096; add t2, t2, t0
    addi s3, s3, -1
    bnez s3, 1b
    la t0, page_b; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7
    sd t0, 0(s2)
    li t1, {8 * (pages - 1)}; add t1, t1, s2; sd t0, 0(t1)
    sfence.vma
    ld a0, 0(a1)
    li t0, {4096 * (pages - 1)}; add t0, t0, a1
    ld a3, 0(t0)
    ebreak
""" + SV39_PAGES_AB + SV39_ROOTS


@pytest.mark.parametrize("pages", [3, PAGES], ids=["logged", "past-the-log"])
@pytest.mark.parametrize("jit", [False, True], ids=["interpreter", "compiled"])
def test_no_translation_outlives_a_flush(rv_asm, rv_env, pages, jit):
    image, _ = rv_asm(_program(pages))
    _space, hart = rv_env.make_machine(image)
    hart.jit = jit
    hart.stop_on = {3}
    flushes = hart._stats()["tlb_flushes"]
    res = hart.run(10_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert hart.x[20] == pages * 0xaa
    assert hart._stats()["tlb_flushes"] > flushes
    assert (hart.x[10], hart.x[13]) == (0xbb, 0xbb), "a translation outlived sfence.vma"

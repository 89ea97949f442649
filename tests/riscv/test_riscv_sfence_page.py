"""sfence.vma with an address forgets that page's translations, not every TLB.

Linux sends one after each page fault it serves (update_mmu_cache); each flushed
every TLB, so the kernel refilled its own entries after every fault (7,000 such
fences in a boot to the shell).  Now only the entries of that page go
(riscv_mmu.pxi, tlb_flush_page); when the address lies in a superpage the TLBs
hold 4 KiB pieces of, they all go, as in QEMU.
"""

from __future__ import annotations

from rv_sv39 import SV39_ENTER, SV39_PAGES_AB, SV39_ROOTS, SV39_TABLES

from vmforge.accel.interp import StopReason

TRIPS = 500

# Sv39.  0x80000000: identity gigapage (S).  0x40000000 and 0x40001000: 4 KiB
# pages through l1/l0, onto page_a and page_b.  0xc0000000: a gigapage onto RAM.
PROGRAM = SV39_TABLES + r"""
    li t0, (0x80000 << 10) | 0xc7; sd t0, 24(s0)                      # [3] gigapage R W
    la t0, page_a; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7; sd t0, 0(s2)
    la t0, page_b; srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7; sd t0, 8(s2)
""" + SV39_ENTER + rf"""
s_code:
    li a1, 0x40000000
    li a2, 0x40001000
    li s3, {TRIPS}
1:  ld a0, 0(a1)                # page_a: 0xaa
    sfence.vma a2               # another page's
    addi s3, s3, -1
    bnez s3, 1b
    ebreak
    la t0, page_b               # 0x40000000 -> page_b, that page fenced
    srli t0, t0, 12; slli t0, t0, 10; ori t0, t0, 0xc7; sd t0, 0(s2)
    sfence.vma a1
    ld a0, 0(a1)                # page_b: 0xbb
    ebreak
    la t0, x                    # two 4 KiB pieces of the gigapage used
    la t1, y
    li t2, 0x40000000
    add t0, t0, t2
    add t1, t1, t2
    ld a0, 0(t0)
    ld a0, 0(t1)
    sd zero, 24(s0)             # the gigapage unmapped; fenced at x's address
    sfence.vma t0
    ld a0, 0(t1)                # y: a load page fault
    ebreak
""" + SV39_PAGES_AB + r"""
x:  .dword 1
    .balign 4096
y:  .dword 2
    .balign 4096
""" + SV39_ROOTS


def _run(hart, cause: int = 3):
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == cause, res


def test_sfence_vma_with_an_address(rv_asm, rv_env):
    image, _ = rv_asm(PROGRAM)
    _space, hart = rv_env.make_machine(image)
    hart.stop_on = {3, 13}
    _run(hart)
    assert hart.x[10] == 0xaa
    # before: a flush of every TLB a trip
    assert hart._stats()["tlb_flushes"] < 10, hart._stats()
    hart.pc += 4
    _run(hart)
    assert hart.x[10] == 0xbb, "the fenced page kept its old translation"
    hart.pc += 4
    _run(hart, 13)      # the other piece of the gigapage went with the fence

"""fence.i compares a decoded page with memory when the hart next enters it.

fence.i used to compare every decoded page of the hart with the bytes it was
decoded from (up to 1024 pages of 4 KiB, each time: Linux runs a fence.i for each
program it starts, 630 in a boot to the shell).  Now it forgets which pages the
fetch TLBs lead to, and a page is compared when the run loop or compiled code
next enters it (riscv_code.pxi, code_sync / code_check).  Pages not entered again
are not compared; a page changed behind the hart's back is still seen, also when
compiled code jumps straight to it from another page (cross_page).
"""

from __future__ import annotations

from vmforge.accel.interp import StopReason

PAGES = 32
FENCES = 50

# PAGES functions, a page each, all run once; then FENCES fence.i in a loop
MANY = "\n".join(
    [".option norvc", "la s3, funcs", f"li s2, {PAGES}",
     "1: jalr ra, 0(s3)", "li t0, 4096", "add s3, s3, t0", "addi s2, s2, -1", "bnez s2, 1b",
     f"li s2, {FENCES}", "2: fence.i", "addi s2, s2, -1", "bnez s2, 2b", "ebreak",
     ".balign 4096", "funcs:"]
    + ["addi a0, a0, 1\nret\n.balign 4096" for _ in range(PAGES)])


def _run_to_ebreak(hart) -> None:
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res


def test_fence_i_compares_only_pages_entered_again(rv_asm, rv_env):
    image, _ = rv_asm(MANY)
    _space, hart = rv_env.make_machine(image)
    hart.stop_on = {3}
    _run_to_ebreak(hart)
    assert hart.x[10] == PAGES
    # before: each fence.i compared all PAGES + 1 pages
    assert hart._stats()["code_checks"] <= 2 * FENCES, hart._stats()


# a compiled loop on one page calls g on the next (compiled too, the call chained
# across pages); g is rewritten as by a device's DMA; fence.i, then the same loop
PROGRAM = r"""
    .option norvc
    la s7, g
    li s2, 200
1:  jalr ra, 0(s7)
    addi s2, s2, -1
    bnez s2, 1b
    ebreak
    fence.i
    li s2, 200
    li a0, 0
    j 1b
new: li a0, 22
    ret
    .balign 4096
g:  li a0, 11
    ret
"""


def test_compiled_code_calling_a_changed_page_after_fence_i(rv_asm, rv_env):
    image, syms = rv_asm(PROGRAM)
    space, hart = rv_env.make_machine(image)
    hart.jit = True                 # (a test of the compiler, VMFORGE_JIT=0 or not)
    hart.stop_on = {3}
    _run_to_ebreak(hart)
    assert hart.x[10] == 11
    assert hart._stats()["jit_regions"] >= 2
    space.memory.write(syms["g"], space.memory.read(syms["new"], 4))
    hart.pc += 4
    _run_to_ebreak(hart)
    assert hart.x[10] == 22, "compiled code ran g as it was before fence.i"

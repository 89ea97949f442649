"""A page that held code and now holds data (Linux reuses freed pages of code).

Stores into a page with decoded instructions take the slow path, which forgets
what they overwrite (riscv_code.pxi).  Once a store leaves the page with no
decoded or compiled instruction, the page stops being a code page
(code_store): its stores take the fast path again.  Before, every store into it
went through the slow path for as long as the decoded page lived: in the busybox
shell loop 1.5 million stores a run went there for pages that held no code
any more.  Code written there later is decoded afresh.
"""

from __future__ import annotations

import pytest

from vmforge.accel.interp import StopReason

TRIPS = 2000

PROGRAM = rf"""
    .option norvc
    la s3, f
    jalr ra, 0(s3)          # f runs once: its page holds decoded code
    mv t0, s3               # f's page overwritten with data (zeros)
    li t1, 512
1:  sd zero, 0(t0)
    addi t0, t0, 8
    addi t1, t1, -1
    bnez t1, 1b
    li t1, {TRIPS}          # and then used for data
2:  sd t1, 64(s3)
    addi t1, t1, -1
    bnez t1, 2b
    ebreak
    la t0, new              # second part: new code copied there, then run
    lw t1, 0(t0)
    sw t1, 0(s3)
    lw t1, 4(t0)
    sw t1, 4(s3)
    fence.i
    jalr ra, 0(s3)
    ebreak
new: li a0, 22
    ret
    .balign 4096
f:  li a0, 11
    ret
"""


@pytest.mark.parametrize("jit", [False, True], ids=["interpreter", "compiled"])
def test_a_page_overwritten_with_data_stops_being_code(rv_asm, rv_env, jit):
    image, _syms = rv_asm(PROGRAM)
    _space, hart = rv_env.make_machine(image)
    hart.jit = jit
    hart.stop_on = {3}
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert hart.x[10] == 11
    # before: each of the 512 + TRIPS stores went through the slow path
    assert hart._stats()["code_stores"] < 16, hart._stats()
    hart.pc += 4
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert hart.x[10] == 22, "the code written into the released page did not run"


# f is compiled with a path the interpreter never ran (a1 is 0): the region's
# xmap marks those halfwords, but no record holds them.  Then, with the compiler
# off (its regions unlinked), the interpreter overwrites what ran, not that path,
# and stores data beside.
STALE = rf"""
    .option norvc
    la s3, f
    li s2, 1000
1:  jalr ra, 0(s3)
    addi s2, s2, -1
    bnez s2, 1b
    ebreak
    sw zero, 0(s3)          # the beqz
    sw zero, 16(s3)         # the addi at 2:
    sw zero, 20(s3)         # the ret
    li t1, {TRIPS}
3:  sd t1, 2040(s3)
    addi t1, t1, -1
    bnez t1, 3b
    ebreak
    .balign 4096
f:  beqz a1, 2f
    addi a0, a0, 100
    addi a0, a0, 100
    addi a0, a0, 100
2:  addi a0, a0, 1
    ret
"""


def test_halfwords_of_a_gone_region_do_not_keep_a_page_code(rv_asm, rv_env):
    image, _syms = rv_asm(STALE)
    _space, hart = rv_env.make_machine(image)
    hart.jit = True                 # (a test of the compiler, VMFORGE_JIT=0 or not)
    hart.stop_on = {3}
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert hart.x[10] == 1000
    assert hart._stats()["jit_regions"] > 0
    hart.jit = False
    hart.pc += 4
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    # before: each of the TRIPS data stores went through the slow path
    assert hart._stats()["code_stores"] < 16, hart._stats()


def test_a_gone_region_head_does_not_keep_a_page_code(rv_asm, rv_env):
    """As above, but the region goes because its head is overwritten (its marks of
    compiled halfwords stayed); the data stores run one at a time (exact runs:
    the interpreter's stores, no region compiled for them)."""
    image, _syms = rv_asm(STALE)
    _space, hart = rv_env.make_machine(image)
    hart.jit = True                 # (a test of the compiler, VMFORGE_JIT=0 or not)
    hart.stop_on = {3}
    res = hart.run(1_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert hart._stats()["jit_regions"] > 0
    hart.pc += 4
    res = hart.run(1_000_000, exact=True)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert hart._stats()["code_stores"] < 16, hart._stats()

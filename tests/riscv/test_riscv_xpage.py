"""An instruction that crosses into the next page, run many times.

Its record (OP_XPAGE) cannot hold it: the upper half lives on another page, which
may be mapped elsewhere or rewritten.  The hart keeps the last decoding beside
the page (CodePage.xrec) and reuses it while the fetch TLB's entry for the next
page shows the same upper half (riscv.pyx, xpage_cached); before, every run
decoded the instruction again and walked the page table for its upper half
(busybox ash's keyword search loops through one).
"""

from __future__ import annotations

from vmforge.accel.interp import StopReason

TRIPS = 1000

# a loop whose ``addi a0, a0, 3`` starts 2 bytes before a page's end; its 12-bit
# immediate is in the upper half, on the next page
LOOP = rf"""
    .option norvc
    li s2, {TRIPS}
    li a0, 0
    j loop
    .balign 4096
    .skip 0xff8
loop:
    addi s2, s2, -1
    .2byte 0x0001               # c.nop: the next instruction starts at 0xffe
cross:
    addi a0, a0, 3
    bnez s2, loop
    ebreak
    li s2, {TRIPS}                # second part: the same loop again
    fence.i
    j loop
"""


def _run_to_ebreak(hart) -> None:
    res = hart.run(10_000_000)
    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res


def _machine(rv_asm, rv_env):
    image, syms = rv_asm(LOOP)
    assert syms["cross"] & 0xfff == 0xffe
    space, hart = rv_env.make_machine(image)
    hart.stop_on = {3}
    return space, hart, syms


def test_crossing_instruction_is_decoded_once(rv_asm, rv_env):
    _space, hart, _syms = _machine(rv_asm, rv_env)
    _run_to_ebreak(hart)
    assert hart.x[10] == 3 * TRIPS
    # before: decoded again on each of the TRIPS runs
    assert hart._stats()["decodes"] < 100, hart._stats()


def test_a_changed_upper_half_is_seen(rv_asm, rv_env):
    """The upper half (the immediate) rewritten behind the hart's back (as by a
    device's DMA): after fence.i the loop adds 5, not the 3 decoded before."""
    space, hart, syms = _machine(rv_asm, rv_env)
    _run_to_ebreak(hart)
    new = (5 << 20) | (10 << 15) | (10 << 7) | 0x13      # addi a0, a0, 5
    assert space.memory.read(syms["cross"], 2) == new.to_bytes(4, "little")[:2]
    space.memory.write(syms["cross"] + 2, new.to_bytes(4, "little")[2:])
    hart.pc += 4
    _run_to_ebreak(hart)
    assert hart.x[10] == 3 * TRIPS + 5 * TRIPS


def test_a_store_to_the_upper_half_is_seen(rv_asm, rv_env):
    """The hart's own store into the next page's first halfword changes the
    crossing instruction at once (no fence.i between: the store is the hart's)."""
    space, hart, syms = _machine(rv_asm, rv_env)
    _run_to_ebreak(hart)
    hart.x[5] = syms["cross"] + 2
    hart.x[6] = (7 << 4) | (10 >> 1)                      # imm 7, rs1 a0: bits 31:16
    store = (6 << 20) | (5 << 15) | (1 << 12) | 0x23     # sh t1, 0(t0)
    at = syms["cross"] + 0x100                           # scratch, on the next page
    space.memory.write(at, store.to_bytes(4, "little") + (0x00100073).to_bytes(4, "little"))
    hart.pc = at
    _run_to_ebreak(hart)                                 # the store, then ebreak
    hart.x[18] = TRIPS
    hart.pc = syms["loop"]
    _run_to_ebreak(hart)
    assert hart.x[10] == 3 * TRIPS + 7 * TRIPS


# a loop whose closing ``bnez`` starts 2 bytes before a page's end (busybox ash's
# keyword search has a ``beq`` there): compiled code falls out at it every trip
BRANCH = rf"""
    .option norvc
    li s2, {TRIPS}
    li a0, 0
    j loop
    .balign 4096
    .skip 0xff0
loop:
    addi a0, a0, 3
    addi s2, s2, -1
    addi a1, a0, 1
    .2byte 0x0001               # c.nop: the next instruction starts at 0xffe
cross:
    bnez s2, loop
    ebreak
"""


def _branch_machine(rv_asm, rv_env, jit: bool):
    image, syms = rv_asm(BRANCH)
    assert syms["cross"] & 0xfff == 0xffe
    _space, hart = rv_env.make_machine(image)
    hart.stop_on = {3}
    hart.jit = jit
    return hart, syms


def test_a_crossing_branch_is_run_without_its_record(rv_asm, rv_env):
    """The interpreter into the crossing branch: it runs from the kept decoding at
    once (xpage_branch), not as a one-record page (three dispatches and a copy of
    the record before).  (Compiled regions now hold such a branch themselves,
    riscv_jit_xpage.pxi, so only the interpreter reaches xpage_branch here.)"""
    hart, _syms = _branch_machine(rv_asm, rv_env, jit=False)
    _run_to_ebreak(hart)
    assert hart.x[10] == 3 * TRIPS and hart.x[18] == 0
    assert hart._stats()["xpage_branches"] >= TRIPS - 100, hart._stats()


def test_a_crossing_branch_stops_where_the_interpreter_does(rv_asm, rv_env):
    """Budget stops around the crossing branch land on the same instruction with
    the same count, compiled or not."""
    for budget in (3, 4, 5, 6, 7, 8, 9, 150, 151, 152, 153, 154, 155, 2001, 2002, 2003):
        seen = []
        for jit in (True, False):
            hart, _syms = _branch_machine(rv_asm, rv_env, jit)
            while hart.instret < 160:              # make the loop hot first
                hart.run(40)
            start = hart.instret
            hart.run(budget)
            seen.append((hart.pc, hart.instret - start, hart.x[10], hart.x[18]))
        assert seen[0] == seen[1], (budget, seen)

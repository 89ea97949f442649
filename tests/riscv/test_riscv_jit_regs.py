"""The compiled tier's register plan (``cache_plan`` in ``src/_fast/riscv_jit_regs.pxi``):
a use weighs 8**depth (its loop nesting), so the registers of deeper loops are
cached in host registers first and, at one depth, the busiest ones, whether or
not their loop has loops inside.  Results equal the interpreter's.
"""

from __future__ import annotations

from rv_jitpair import assert_same, run_pair, words
from rv_randprog import DATA, b_type, i_type, r_type

TRIPS = 20


def _addi(rd: int, rs1: int, imm: int) -> int:
    return i_type(imm, rs1, 0, rd, 0x13)


def _count_down(prog: list[int], reg: int, head: int) -> None:
    """``addi reg, reg, -1; bnez reg, head`` appended."""
    prog.append(_addi(reg, reg, -1))
    prog.append(b_type(4 * (head - len(prog)), 0, reg, 1))


def _program() -> list[int]:
    """Three nested loops (x5 outer, x6 middle, x17 inner) whose middle body uses
    ten registers, then a loop at depth 1 counting s4 up and s5 down."""
    prog = [_addi(5, 0, TRIPS)]                         # li t0, TRIPS
    outer = len(prog)
    prog.append(_addi(6, 0, TRIPS))                     # outer: li t1, TRIPS
    middle = len(prog)
    for rd in (7, 9, 11, 13, 15):                       # middle: add x7, x7, x8 ...
        prog.append(r_type(0, 0, 0x33, rd, rd, rd + 1))
    prog.append(_addi(17, 0, TRIPS))                    # li a7, TRIPS
    _count_down(prog, 17, len(prog))                    # inner: addi a7, -1; bnez a7
    _count_down(prog, 6, middle)                        # bnez t1, middle
    _count_down(prog, 5, outer)                         # bnez t0, outer
    last = len(prog)
    prog.append(_addi(20, 20, 1))                       # last: addi s4, s4, 1
    _count_down(prog, 21, last)                         # addi s5, s5, -1; bnez s5, last
    prog.append(0x00100073)                             # ebreak
    return prog


def test_a_deeper_loops_registers_are_cached_first():
    """The middle loop's (depth 2) and the inner loop's (depth 3) registers take
    the pool; the last loop's (depth 1, innermost, as busy a trip) do not."""
    from vmforge._fast.riscv import _jit_bounds

    regs = {i: i * 0x1111 for i in range(7, 17)}
    regs[21] = 500
    harts, spaces = run_pair(words(_program()), regs, [(DATA, 0x1000, False)])
    cached = _jit_bounds(harts[0])["cached"]       # (the last region compiled)
    assert {6, 7, 9, 11, 13, 15, 17} <= set(cached), cached
    assert 20 not in cached and 21 not in cached, cached
    assert_same(harts, spaces)


def _chain_and_scan() -> list[int]:
    """gzip's ``longest_match`` in small: an outer loop (t1 counts 50 trips) whose
    body works eight registers four times a trip (x7 and x9-x15) around a short
    inner loop (a7 counts 3 trips), then a separate 3-instruction loop at the
    outer loop's depth (s4 up, s5 down)."""
    prog = [_addi(6, 0, 50)]                            # li t1, 50
    outer = len(prog)
    for _ in range(2):
        for rd in (7, 9, 10, 11, 12, 13, 14, 15):       # add x7, x7, x7 ... (twice)
            prog.append(r_type(0, 0, 0x33, rd, rd, rd))
    prog.append(_addi(17, 0, 3))                        # li a7, 3
    _count_down(prog, 17, len(prog))                    # inner: addi a7, -1; bnez a7
    _count_down(prog, 6, outer)                         # bnez t1, outer
    last = len(prog)
    prog.append(_addi(20, 20, 1))                       # last: addi s4, s4, 1
    _count_down(prog, 21, last)                         # addi s5, s5, -1; bnez s5, last
    prog.append(0x00100073)                             # ebreak
    return prog


def test_an_outer_loops_busy_registers_outweigh_a_sibling_innermost_loops():
    """x7 and x9-x15 (four uses a trip of the outer loop) are cached, s4 and s5
    (two and three uses a trip of a loop at the same depth) are not, though that
    loop is innermost and the outer one is not: a loop's uses weigh by depth
    only.  (Innermost loops used to win whatever their depth: in gzip that put
    the chain loop's registers in memory and a rarely entered loop's in
    registers.)"""
    from vmforge._fast.riscv import _jit_bounds

    regs = {i: i * 0x1111 for i in (7, 9, 10, 11, 12, 13, 14, 15)}
    regs[21] = 500
    harts, spaces = run_pair(words(_chain_and_scan()), regs, [(DATA, 0x1000, False)])
    cached = _jit_bounds(harts[0])["cached"]
    assert {7, 9, 10, 11, 12, 13, 14, 15, 17} <= set(cached), cached
    assert 20 not in cached and 21 not in cached, cached
    assert_same(harts, spaces)

"""The compiled tier's register plan (``cache_plan`` in ``src/_fast/riscv_jit_regs.pxi``):
the registers of an innermost loop (no loop, call or return inside it) are cached
in host registers whatever its nesting depth, before the registers of code that
is only deeper (a loop body around other loops), and a short innermost loop's
before a long one's.  Results equal the interpreter's.
"""

from __future__ import annotations

from rv_jitpair import assert_same, run_pair, words
from rv_randprog import DATA, b_type, i_type, r_type

TRIPS = 20


def _addi(rd: int, rs1: int, imm: int) -> int:
    return i_type(imm, rs1, 0, rd, 0x13)


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
    inner = len(prog)
    prog.append(_addi(17, 17, -1))                      # inner: addi a7, a7, -1
    prog.append(b_type(4 * (inner - len(prog)), 0, 17, 1))    # bnez a7, inner
    prog.append(_addi(6, 6, -1))
    prog.append(b_type(4 * (middle - len(prog)), 0, 6, 1))    # bnez t1, middle
    prog.append(_addi(5, 5, -1))
    prog.append(b_type(4 * (outer - len(prog)), 0, 5, 1))     # bnez t0, outer
    last = len(prog)
    prog.append(_addi(20, 20, 1))                       # last: addi s4, s4, 1
    prog.append(_addi(21, 21, -1))                      # addi s5, s5, -1
    prog.append(b_type(4 * (last - len(prog)), 0, 21, 1))     # bnez s5, last
    prog.append(0x00100073)                             # ebreak
    return prog


def test_an_innermost_loop_keeps_its_registers_in_host_registers():
    from vmforge._fast.riscv import _jit_bounds

    regs = {i: i * 0x1111 for i in range(7, 17)}
    regs[21] = 500
    harts, spaces = run_pair(words(_program()), regs, [(DATA, 0x1000, False)])
    cached = _jit_bounds(harts[0])["cached"]       # (the last region compiled)
    assert 20 in cached and 21 in cached, cached
    assert_same(harts, spaces)


def _short_and_long() -> list[int]:
    """Two innermost loops one after the other: a short one (3 instructions: t0
    counts, t1 += s2) and a long one (13: t2 counts, s0 += s1, five registers
    doubled twice each), 100 trips each.  s2 and s1 are used once a trip each."""
    prog = [_addi(5, 0, 100), _addi(7, 0, 100)]
    short = len(prog)
    prog.append(_addi(5, 5, -1))                        # short: addi t0, t0, -1
    prog.append(r_type(0, 0, 0x33, 6, 6, 18))           # add t1, t1, s2
    prog.append(b_type(4 * (short - len(prog)), 0, 5, 1))     # bnez t0, short
    long = len(prog)
    prog.append(_addi(7, 7, -1))                        # long: addi t2, t2, -1
    prog.append(r_type(0, 0, 0x33, 8, 8, 17))           # add s0, s0, a7
    for rd in (28, 29, 30, 31, 19) * 2:                 # add t3, t3, t3 ...
        prog.append(r_type(0, 0, 0x33, rd, rd, rd))
    prog.append(b_type(4 * (long - len(prog)), 0, 7, 1))      # bnez t2, long
    prog.append(0x00100073)                             # ebreak
    return prog


def test_a_short_innermost_loop_outweighs_a_long_one():
    """The pool's last register goes to s2 (once a trip of the 3-instruction loop),
    not a7 (once a trip of the 13-instruction loop), though both are used as often:
    the short loop's trip is shorter (quicksort's scans against its fill loop)."""
    from vmforge._fast.riscv import _jit_bounds

    regs = {i: i * 0x1111 for i in (6, 8, 17, 18, 19, 28, 29, 30, 31)}
    harts, spaces = run_pair(words(_short_and_long()), regs, [(DATA, 0x1000, False)])
    cached = _jit_bounds(harts[0])["cached"]
    assert 18 in cached and 17 not in cached, cached
    assert_same(harts, spaces)

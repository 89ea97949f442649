"""Compiled division (``emit_div`` in ``src/_fast/riscv_jit_alu.pxi``) reads its
divisor where it is, a host register or x[], and leaves rcx alone, so a loop that
divides keeps the TLB entry its store left in rcx (``probe_plan``; a pointer
stepped by ``addi`` keeps it too).  Results, including division by zero and the
signed overflow in both widths, equal the interpreter's.
"""

from __future__ import annotations

from rv_jitpair import assert_same, run_pair, words
from rv_randprog import DATA, b_type, i_type, r_type, s_type

M = 1  # funct7 of the M extension
PAIRS = [(7, 0), (-(1 << 63), -1), (0x7FFF_FFFF_8000_0000, 0xFFFF_FFFF), (-5, 3), (5, -3),
         (0xDEAD_BEEF_0123_4567, 0x1_0000_0001), (0x8000_0000, 0xFFFF_FFFF_FFFF_FFFF),
         (123456789, 0), (-1, 1), (1 << 40, 7)]


def _ld(rd: int, imm: int, rs1: int) -> int:
    return i_type(imm, rs1, 3, rd, 0x03)


def _sd(rs2: int, imm: int, rs1: int) -> int:
    return s_type(imm, rs2, rs1, 3)


def _program(divisions: bool = True) -> list[int]:
    """Every div/rem form over the pairs (``divisions``), then a loop of remu and
    stores through a pointer stepped by addi."""
    # every div/rem form, by a1 (used often: cached) and by t2 (a copy, used less)
    ops = [(4, 0x33), (5, 0x33), (6, 0x33), (7, 0x33), (4, 0x3B), (5, 0x3B), (6, 0x3B),
           (7, 0x3B)]
    loop1 = [_ld(10, 0, 8), _ld(11, 8, 8), r_type(0, 0, 0x33, 7, 11, 0)]   # mv t2, a1
    for n, (f3, opc) in enumerate(ops):
        rd = 12 + n % 6
        loop1.append(r_type(M, f3, opc, rd, 10, 11 if n % 2 else 7))
        loop1.append(_sd(rd, 8 * n, 9))
    loop1 += [i_type(16, 8, 0, 8, 0x13), i_type(64, 9, 0, 9, 0x13),   # s0 += 16, s1 += 64
              i_type(-1, 6, 0, 6, 0x13)]
    loop1.append(b_type(-4 * len(loop1), 0, 6, 1))                       # bnez t1, loop1
    loop2 = [
        r_type(M, 7, 0x33, 22, 23, 20),         # loop2: remu s6, s7, s4
        i_type(8, 21, 0, 21, 0x13),             # addi s5, s5, 8
        _sd(22, -8, 21),                        # sd s6, -8(s5)
        i_type(7, 23, 0, 23, 0x13),             # addi s7, s7, 7
        i_type(-1, 28, 0, 28, 0x13),            # addi t3, t3, -1
    ]
    loop2.append(b_type(-4 * len(loop2), 0, 28, 1))                      # bnez t3, loop2
    return [*(loop1 if divisions else []), *loop2, 0x00100073]


def _run(divisions: bool):
    table = b"".join((a & (1 << 64) - 1).to_bytes(8, "little") + (b & (1 << 64) - 1).to_bytes(
        8, "little") for a, b in PAIRS * 8)
    regs = {8: DATA, 9: DATA + 0x2000, 6: len(PAIRS) * 8, 21: DATA + 0x8000, 28: 300,
            23: 12345, 20: 1000003}
    return run_pair(words(_program(divisions)), regs, [(DATA, 0x10000, False)], (DATA, table))


def test_compiled_division_matches_the_interpreter():
    harts, spaces = _run(True)
    assert_same(harts, spaces, [(DATA, 0x10000)])


def test_a_loop_that_divides_keeps_its_store_entry_in_rcx():
    """The loop's store compares its tag with the entry the store before left in
    rcx (fails before division left rcx alone and addi kept the base's entry)."""
    from vmforge._fast.riscv import _jit_bounds

    harts, spaces = _run(False)
    assert _jit_bounds(harts[0])["probes_again"] >= 1, _jit_bounds(harts[0])
    assert_same(harts, spaces, [(DATA, 0x10000)])

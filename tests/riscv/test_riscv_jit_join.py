"""rcx carried forward to where paths join (``join_note`` / ``join_settle`` in
``src/_fast/riscv_jit_mem.pxi``): when every jump to a label and the fall-through
into it leave the TLB entry of one table from one base register, the first
access there probes from that entry (a store after a load through the same
pointer: the twin entry, ``probe_cross``) instead of in full; where the ways in
disagree it probes in full.  The array crosses into a second page, a RAM block
of its own, so an access through the other page's entry would reach the wrong
host memory.  Registers, memory and instret equal the interpreter's.
"""

from __future__ import annotations

from rv_jitpair import assert_same, run_pair, words
from rv_randprog import DATA, b_type, i_type, r_type, s_type

TWO_BLOCKS = [(DATA, 0x1000, False), (DATA + 0x1000, 0x1000, False)]
TRIPS = 400                     # halfwords: from 0x100 before the page's end on


def _lhu(rd: int, imm: int, rs1: int) -> int:
    return i_type(imm, rs1, 5, rd, 0x03)


def _sh(rs2: int, imm: int, rs1: int) -> int:
    return s_type(imm, rs2, rs1, 1)


def _slide() -> bytes:
    """gzip's fill_window slide: ``m = *p; *p = m >= t0 ? m - t0 : 0`` over the
    halfwords from a4 to a3, then the same with a load through a2 on one arm
    only (the ways into the second join disagree)."""
    body = [
        _lhu(15, 0, 14),                        # loop: lhu a5, 0(a4)
        b_type(12, 5, 15, 6),                   # bltu a5, t0, low
        r_type(0x20, 0, 0x33, 15, 15, 5),       # sub a5, a5, t0
        0x0080006F,                             # j store (+8)
        i_type(0, 0, 0, 15, 0x13),              # low: li a5, 0
        _sh(15, 0, 14),                         # store: sh a5, 0(a4)   (rcx: a4's, from both)
        i_type(1, 15, 7, 7, 0x13),              # andi t2, a5, 1
        b_type(8, 0, 7, 0),                     # beqz t2, even
        _lhu(28, 0, 12),                        # lhu t3, 0(a2)   (rcx: a2's on this arm)
        _sh(15, 2, 14),                         # even: sh a5, 2(a4)   (ways in disagree)
        i_type(2, 14, 0, 14, 0x13),             # addi a4, a4, 2
    ]
    body.append(b_type(-4 * len(body), 13, 14, 1))     # bne a4, a3, loop
    return words([*body, 0x00100073])                   # ebreak


def test_a_store_after_a_join_probes_from_the_entry_every_way_in_left():
    from vmforge._fast.riscv import _jit_bounds

    data = bytes((i * 97 + 11) & 0xFF for i in range(8192))
    start = DATA + 0x1000 - 0x100
    regs = {14: start, 13: start + 2 * TRIPS, 5: 0x8000, 12: DATA + 0x1800}
    harts, spaces = run_pair(_slide(), regs, TWO_BLOCKS, (DATA, data))
    assert _jit_bounds(harts[0])["probes_cross"] >= 1, _jit_bounds(harts[0])
    assert_same(harts, spaces, [(DATA, 8192)])

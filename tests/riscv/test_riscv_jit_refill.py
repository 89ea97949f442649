"""Compiled loads whose TLB entry is missing: a load that the slow path reads from
RAM (a TLB refill) goes on in the region (riscv_jit_mem.pxi, emit_stub), with the
same registers, memory and instret as the interpreter; a load the slow path cannot
serve so plainly (here: one crossing a page) still leaves it after the instruction."""

from __future__ import annotations

import random

from rv_jitpair import assert_same, run_pair, words
from rv_randprog import b_type, i_type, r_type

BIG = 0x9000_0000           # 512 pages read one after the other: every one misses
PAGES = 512
ROUNDS = 6


def _walk(cross: bool) -> bytes:
    """ROUNDS times, a load of each of PAGES pages (ld, lw, lh of each; a ld through
    a register it loads into; with ``cross``, a ld across the page's end too)."""
    last = (i_type(2044, 22, 3, 21, 0x03) if cross      # ld s5, 2044(s6): crosses
            else i_type(0, 0, 0, 21, 0x13))             # li s5, 0
    prog = [
        r_type(0, 0, 0x33, 5, 19, 0),      # outer: add t0, s3, x0
        i_type(PAGES, 0, 0, 6, 0x13),      # li t1, PAGES
        i_type(0, 5, 3, 7, 0x03),          # inner: ld t2, 0(t0)
        r_type(0, 0, 0x33, 28, 28, 7),     # add t3, t3, t2
        i_type(8, 5, 2, 7, 0x03),          # lw t2, 8(t0)
        r_type(0, 4, 0x33, 28, 28, 7),     # xor t3, t3, t2
        i_type(2046, 5, 1, 7, 0x03),       # lh t2, 2046(t0)
        r_type(0, 0, 0x33, 28, 28, 7),     # add t3, t3, t2
        r_type(0, 0, 0x33, 20, 5, 0),      # add s4, t0, x0
        i_type(24, 20, 3, 20, 0x03),       # ld s4, 24(s4)
        r_type(0, 4, 0x33, 28, 28, 20),    # xor t3, t3, s4
        r_type(0, 0, 0x33, 22, 5, 23),     # add s6, t0, s7 (s7 = 2048)
        last,
        r_type(0, 0, 0x33, 28, 28, 21),    # add t3, t3, s5
        r_type(0, 0, 0x33, 5, 5, 29),      # add t0, t0, t4
        i_type(-1, 6, 0, 6, 0x13),         # addi t1, t1, -1
        b_type(-56, 0, 6, 1),              # bnez t1, inner
        i_type(-1, 18, 0, 18, 0x13),       # addi s2, s2, -1
        b_type(-72, 0, 18, 1),             # bnez s2, outer
        0x00100073,                        # ebreak
    ]
    return words(prog)


def _run(cross: bool):
    data = random.Random(14).randbytes((PAGES + 1) * 4096)
    harts, spaces = run_pair(_walk(cross), {18: ROUNDS, 19: BIG, 23: 2048, 29: 4096},
                             rams=[(BIG, (PAGES + 1) * 4096, False)], data=(BIG, data))
    assert_same(harts, spaces)
    assert harts[0].x[28] != 0 and harts[0].x[6] == 0 and harts[0].x[18] == 0
    return harts[0]._stats()


def test_loads_refilling_the_tlb_stay_in_compiled_code():
    stats = _run(cross=False)
    # before, every refill (about 3 * PAGES * ROUNDS of them) left the region
    assert stats["jit_calls"] < 50, stats


def test_a_load_across_pages_still_leaves_the_region():
    stats = _run(cross=True)
    # each crossing load leaves (but those of the trips run before the loop is hot)
    assert stats["jit_calls"] >= PAGES * (ROUNDS - 1), stats

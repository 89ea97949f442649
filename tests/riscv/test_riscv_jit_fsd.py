"""``fsd`` compiled inline (``emit_fsd`` in ``src/_fast/riscv_jit_mem.pxi``): a store
of f[rs2] through the write TLB, as ``sd``, once mstatus.FS is seen on; with FS
off the region leaves before it and the interpreter raises the illegal
instruction.  Linux saves the FP registers with 32 of them at every trap from a
program that used them; called (emit_exec), each took a writeback and a call.
Memory, registers, the stop and instret equal the interpreter's.
"""

from __future__ import annotations

import struct

from rv_jitpair import assert_same, run_pair, words
from rv_randprog import b_type, i_type, r_type, s_type

DATA = 0x9000_0000
TRIPS = 300
FSD_F1 = s_type(16, 1, 8, 3, 0x27)          # fsd f1, 16(s0)
FSD_F2 = s_type(-8, 2, 9, 3, 0x27)          # fsd f2, -8(s1)


def _fmv_d_x(fd: int, rs1: int) -> int:
    return r_type(0x79, 0, 0x53, fd, rs1, 0)


def _program() -> bytes:
    """FS on, f1/f2 from a1/a2, then TRIPS trips storing them (two pages: s1 walks
    into the second) and reading them back; at trip s3 (t1 counting down) FS is
    turned off, so the next fsd is an illegal instruction."""
    prog = [
        (2 << 12) | (5 << 7) | 0x37,        # lui t0, 2 (mstatus.FS = initial)
        i_type(0x300, 5, 2, 0, 0x73),       # csrrs x0, mstatus, t0
        (6 << 12) | (7 << 7) | 0x37,        # lui t2, 6 (FS: both bits)
        _fmv_d_x(1, 11),                    # fmv.d.x f1, a1
        _fmv_d_x(2, 12),                    # fmv.d.x f2, a2
        b_type(8, 19, 6, 1),                # loop: bne t1, s3, +8
        i_type(0x300, 7, 3, 0, 0x73),       # csrrc x0, mstatus, t2 (FS off)
        FSD_F1,
        FSD_F2,
        i_type(16, 8, 3, 10, 0x03),         # ld a0, 16(s0)
        r_type(0, 0, 0x33, 28, 28, 10),     # add t3, t3, a0
        i_type(-8, 9, 3, 10, 0x03),         # ld a0, -8(s1)
        r_type(0, 4, 0x33, 28, 28, 10),     # xor t3, t3, a0
        i_type(8, 9, 0, 9, 0x13),           # addi s1, s1, 8
        i_type(1, 11, 0, 11, 0x13),         # addi a1, a1, 1
        _fmv_d_x(1, 11),                    # fmv.d.x f1, a1 (fp arithmetic: a way out)
        i_type(-1, 6, 0, 6, 0x13),          # addi t1, t1, -1
    ]
    prog.append(b_type(-4 * (len(prog) - 5), 0, 6, 1))      # bnez t1, loop
    prog.append(0x00100073)                                 # ebreak
    return words(prog)


def _run(fs_off_at: int = -1):
    regs = {8: DATA + 0x100, 9: DATA + 0x1000 - 8 * 100, 6: TRIPS, 19: fs_off_at,
            11: 0x4009_21FB_5444_2D18, 12: 0x7FF8_0000_0000_0001}
    harts, spaces = run_pair(_program(), regs, rams=[(DATA, 0x2000, False)],
                             stop_on=frozenset({2, 3}))
    assert_same(harts, spaces, [(DATA, 0x2000)])
    assert harts[0].pc == harts[1].pc
    return harts


def test_fsd_stores_inline_and_matches_the_interpreter():
    """No copy of the fsd's record in the code (emit_exec embeds one for its call:
    before, every fsd was called), and memory equals the interpreter's."""
    harts = _run()
    assert harts[0].x[6] == 0
    code = harts[0]._jit_code()[1]
    for word in (FSD_F1, FSD_F2):
        assert struct.pack("<I", word) not in code


def test_fsd_with_fs_off_traps_where_the_interpreter_does():
    """Both stop at the first fsd after FS is turned off (the illegal instruction,
    cause 2), at the same pc and instret."""
    harts = _run(fs_off_at=TRIPS // 2)
    assert harts[0].x[6] == harts[1].x[6] == TRIPS // 2

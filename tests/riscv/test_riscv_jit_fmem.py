"""``fld`` and ``fsd`` compiled inline (``emit_fmem`` in ``src/_fast/riscv_jit_mem.pxi``):
a load into f[rd] / a store of f[rs2] through the TLB, as ``ld`` / ``sd``, once
mstatus.FS is seen on; with FS off the region leaves before it and the
interpreter raises the illegal instruction.  h.cnt is set as the run loop sets
it for these ops, so a read of the CLINT's instruction-counted mtime after one
sees the interpreter's count.  Linux saves and restores the FP registers with
32 of them at every trap from a program that used them; called (emit_exec),
each took a writeback and a call.  Memory, registers (FP ones too), the stop and
instret equal the interpreter's.
"""

from __future__ import annotations

import struct

from rv_jitpair import assert_same, run_pair, words
from rv_randprog import CODE, b_type, i_type, r_type, s_type

from vmforge.accel.cluster import HartCluster
from vmforge.memory import AddressSpace
from vmforge_riscv_devices.clint import HartClint

DATA = 0x9000_0000
TRIPS = 300
FSD_F1 = s_type(16, 1, 8, 3, 0x27)          # fsd f1, 16(s0)
FSD_F2 = s_type(-8, 2, 9, 3, 0x27)          # fsd f2, -8(s1)
FLD_F3 = i_type(16, 8, 3, 3, 0x07)          # fld f3, 16(s0)
CLINT, MTIME = 0x200_0000, 0x200_BFF8


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
        FLD_F3,
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
    assert [harts[0]._get_f(i) for i in range(32)] == [harts[1]._get_f(i) for i in range(32)]
    return harts


def test_fld_and_fsd_run_inline_and_match_the_interpreter():
    """No copy of the fsd's or fld's record in the code (emit_exec embeds one for
    its call: before, each was called), and memory equals the interpreter's."""
    harts = _run()
    assert harts[0].x[6] == 0
    code = harts[0]._jit_code()[1]
    for word in (FSD_F1, FSD_F2, FLD_F3):
        assert struct.pack("<I", word) not in code


def test_fsd_with_fs_off_traps_where_the_interpreter_does():
    """Both stop at the first fsd after FS is turned off (the illegal instruction,
    cause 2), at the same pc and instret."""
    harts = _run(fs_off_at=TRIPS // 2)
    assert harts[0].x[6] == harts[1].x[6] == TRIPS // 2


def _mtime_program() -> bytes:
    """FS on, then trips of: fld, a read of mtime, fsd, a read of mtime (no jump
    between them), summed into t4."""
    prog = [
        (2 << 12) | (5 << 7) | 0x37,        # lui t0, 2 (mstatus.FS = initial)
        i_type(0x300, 5, 2, 0, 0x73),       # csrrs x0, mstatus, t0
        i_type(8, 8, 3, 1, 0x07),           # loop: fld f1, 8(s0)
        i_type(0, 9, 3, 28, 0x03),          # ld t3, 0(s1)   (mtime)
        r_type(0, 0, 0x33, 29, 29, 28),     # add t4, t4, t3
        s_type(16, 1, 8, 3, 0x27),          # fsd f1, 16(s0)
        i_type(0, 9, 3, 28, 0x03),          # ld t3, 0(s1)
        r_type(0, 4, 0x33, 29, 29, 28),     # xor t4, t4, t3
        i_type(-1, 6, 0, 6, 0x13),          # addi t1, t1, -1
    ]
    prog.append(b_type(-4 * (len(prog) - 2), 0, 6, 1))      # bnez t1, loop
    prog.append(0x00100073)                                 # ebreak
    return words(prog)


def test_mtime_read_after_fld_and_fsd_counts_as_in_the_interpreter():
    """Each read of mtime (one tick an instruction) after an fld or fsd sees the
    count the interpreter set there (fails without h.cnt set: the compiled count
    was the one at the loop's head)."""
    sums = []
    for jit in (True, False):
        space = AddressSpace()
        space.add_ram(CODE, 1 << 20)
        space.add_ram(DATA, 0x1000)
        space.memory.load(CODE, _mtime_program())
        cluster = HartCluster(space, 1)             # time: one tick an instruction
        cluster.reset(CODE)
        space.add_mmio(CLINT, HartClint(cluster), HartClint.mmio_size)
        hart = cluster.harts[0]
        hart.jit = jit
        hart.stop_on = {3}
        hart.x[8], hart.x[9], hart.x[6] = DATA, MTIME, TRIPS
        hart.run(1 << 20)
        assert hart.x[6] == 0 and hart.pc == CODE + 4 * 10
        sums.append((hart.x[29], hart.instret))
    assert sums[0] == sums[1]

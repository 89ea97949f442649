"""``sext.w`` straight after the W op that wrote its source (FNV-1a's ``mulw a4, a5,
a3; sext.w a5, a4``) reads eax, which still holds that op's result (``eax_in`` in
``src/_fast/riscv_jit.pxi``): its ``movsxd`` sits beside the W op's own, not after
it.  Where another path joins at the ``sext.w`` (a label) or it extends another
register, it reads its source as before.  Results equal the interpreter's.
"""

from __future__ import annotations

import re

from rv_jitpair import assert_same, run_pair, words
from rv_randprog import DATA, b_type, i_type, r_type

# movsxd r64, eax twice in a row (REX.W, optionally REX.R; ModRM mod=11, rm=eax)
TWO_FROM_EAX = re.compile(rb"[\x48\x4c]\x63[\xc0\xc8\xd0\xd8\xe0\xe8\xf0\xf8]"
                          rb"[\x48\x4c]\x63[\xc0\xc8\xd0\xd8\xe0\xe8\xf0\xf8]")


def _sext_w(rd: int, rs1: int) -> int:
    return i_type(0, rs1, 0, rd, 0x1B)                  # addiw rd, rs1, 0


def _mulw(rd: int, rs1: int, rs2: int) -> int:
    return r_type(1, 0, 0x3B, rd, rs1, rs2)


def _program() -> bytes:
    """loop1: FNV-1a's step on a5 (a4 = mulw, sext.w a5 from it); loop2: a sext.w
    after its mulw that a jump also reaches (eax holding another W op's result
    there), and one of a register the W op before it did not write.  Both loops
    count on t2, so their ten registers fit the pool whatever its order."""
    first = [
        r_type(0, 4, 0x33, 15, 15, 6),      # loop1: xor a5, a5, t1
        _mulw(14, 15, 13),                  # mulw a4, a5, a3
        _sext_w(15, 14),                    # sext.w a5, a4   (from eax)
        i_type(7, 6, 0, 6, 0x13),           # addi t1, t1, 7
        i_type(-1, 7, 0, 7, 0x13),          # addi t2, t2, -1
    ]
    first.append(b_type(-4 * len(first), 0, 7, 1))      # bnez t2, loop1
    first.append(i_type(200, 0, 0, 7, 0x13))            # li t2, 200
    second = [
        _mulw(16, 15, 13),                  # loop2: mulw a6, a5, a3
        _sext_w(17, 16),                    # join: sext.w a7, a6  (a label: from a6)
        r_type(0, 0, 0x3B, 28, 17, 15),     # addw t3, a7, a5
        _sext_w(29, 17),                    # sext.w t4, a7   (eax: t3's)
        r_type(0, 0, 0x33, 15, 15, 29),     # add a5, a5, t4
        i_type(-1, 7, 0, 7, 0x13),          # addi t2, t2, -1
        i_type(1, 7, 7, 30, 0x13),          # andi t5, t2, 1
    ]
    second.append(b_type(-4 * (len(second) - 1), 0, 30, 1))    # bnez t5, join (eax: t3)
    second.append(b_type(-4 * len(second), 0, 7, 1))           # bnez t2, loop2
    return words([*first, *second, 0x00100073])       # ebreak


def test_sext_w_after_its_w_op_reads_eax_and_matches_the_interpreter():
    regs = {15: 0x811C9DC5, 13: 16777619, 6: 0x5A, 7: 300}
    harts, spaces = run_pair(_program(), regs, [(DATA, 0x1000, False)])
    assert TWO_FROM_EAX.search(harts[0]._jit_code()[1])
    assert_same(harts, spaces)


def _crossing() -> bytes:
    """The sext.w is the instruction crossing into the next page, after the mulw
    that wrote its source: the check of the next page's half, emitted before it,
    uses rax."""
    code = bytearray(0x1010)
    jal = ((0xFF0 >> 20) & 1) << 31 | ((0xFF0 >> 1) & 0x3FF) << 21 | ((0xFF0 >> 11) & 1) << 20
    code[0:4] = (jal | 0x6F).to_bytes(4, "little")          # j 0xff0
    loop = [r_type(0, 4, 0x33, 15, 15, 6),                  # 0xff0: xor a5, a5, t1
            i_type(7, 6, 0, 6, 0x13)]                       # 0xff4: addi t1, t1, 7
    code[0xFF0:0xFF8] = words(loop)
    code[0xFF8:0xFFA] = (0x0001).to_bytes(2, "little")      # 0xff8: c.nop
    code[0xFFA:0xFFE] = words([_mulw(14, 15, 13)])          # 0xffa: mulw a4, a5, a3
    tail = [_sext_w(15, 14),                                # 0xffe: sext.w a5, a4 (crosses)
            i_type(-1, 5, 0, 5, 0x13),                      # 0x1002: addi t0, t0, -1
            b_type(0xFF0 - 0x1006, 0, 5, 1),                # 0x1006: bnez t0, 0xff0
            0x00100073]                                     # 0x100a: ebreak
    return bytes(code[:0xFFE]) + words(tail)


def test_a_crossing_sext_w_reads_its_source_not_eax():
    regs = {15: 0x811C9DC5, 13: 16777619, 6: 0x5A, 5: 300}
    harts, spaces = run_pair(_crossing(), regs)
    assert_same(harts, spaces)

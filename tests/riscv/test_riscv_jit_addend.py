"""The addend kept in rbx (``addend_plan`` in ``src/_fast/riscv_jit_mem.pxi``): a
region whose loops access memory keeps the addend of the TLB entry in rcx in rbx.
An access that compares its tag with that entry (probe_again) reads memory at
once, without loading the addend; a full probe compares the entry's addend with
rbx and loads it only when it differs.  Accesses alternating between RAM blocks
of their own (another addend each) must reach their own bytes: registers, memory
and instret equal the interpreter's.
"""

from __future__ import annotations

import re

from rv_jitpair import assert_same, run_pair, words
from rv_randprog import DATA, b_type, i_type, r_type, s_type

TRIPS = 300
# two data pages, RAM blocks of their own (their host memory is not contiguous)
TWO_BLOCKS = [(DATA, 0x1000, False), (DATA + 0x1000, 0x1000, False)]

MOV_RAX_ADDEND = b"\x48\x8b\x41\x08"        # mov rax, [rcx + 8]: the addend loaded
ADD_RAX_ADDEND = b"\x48\x03\x41\x08"        # add rax, [rcx + 8]
CMP_RBX_ADDEND = b"\x48\x3b\x59\x08"        # cmp rbx, [rcx + 8]: compared with rbx's
# mov ecx, eax; shr ecx, 7; and ecx, 255 << 5; add rcx, [r15 + disp32]: a TLB index
TLB_INDEX = rb"\x8b\xc8\xc1\xe9\x07\x81\xe1\xe0\x1f\x00\x00\x49\x03\x8f...."


def _ld(rd: int, imm: int, rs1: int) -> int:
    return i_type(imm, rs1, 3, rd, 0x03)


def _sd(rs2: int, imm: int, rs1: int) -> int:
    return s_type(imm, rs2, rs1, 3)


def _scan() -> bytes:
    """A loop walking a doubleword array across the boundary of the two blocks
    (its load compares with the entry of the trip before), and a loop whose two
    loads and store alternate between the blocks (full probes, the addend differs
    each time)."""
    first = [
        _ld(10, 0, 8),                          # loop1: ld a0, 0(s0)
        r_type(0, 0, 0x33, 13, 13, 10),         # add a3, a3, a0
        i_type(8, 8, 0, 8, 0x13),               # addi s0, s0, 8
        i_type(-1, 6, 0, 6, 0x13),              # addi t1, t1, -1
    ]
    first.append(b_type(-4 * len(first), 0, 6, 1))     # bnez t1, loop1
    second = [
        _ld(11, 0, 9),                          # loop2: ld a1, 0(s1)    (block 0)
        _ld(12, 0, 18),                         # ld a2, 0(s2)           (block 1)
        r_type(0, 0, 0x33, 13, 13, 11),         # add a3, a3, a1
        r_type(0, 4, 0x33, 13, 13, 12),         # xor a3, a3, a2
        _sd(13, 0, 9),                          # sd a3, 0(s1)           (block 0)
        i_type(8, 9, 0, 9, 0x13),               # addi s1, s1, 8
        i_type(8, 18, 0, 18, 0x13),             # addi s2, s2, 8
        i_type(-1, 7, 0, 7, 0x13),              # addi t2, t2, -1
    ]
    second.append(b_type(-4 * len(second), 0, 7, 1))  # bnez t2, loop2
    return words([*first, *second, 0x00100073])       # ebreak


def test_loops_read_through_the_kept_addend_and_match_the_interpreter():
    """The compiled loops never load the addend in their main line (before: every
    access did, ``mov rax, [rcx + 8]``); full probes compare it with rbx instead.
    Registers, both blocks and instret equal the interpreter's."""
    data = bytes((i * 29 + 3) & 0xFF for i in range(8192))
    regs = {8: DATA + 0x1000 - 8 * 100, 6: TRIPS, 9: DATA + 0x800, 18: DATA + 0x1800,
            7: TRIPS // 2}
    harts, spaces = run_pair(_scan(), regs, TWO_BLOCKS, (DATA, data))
    text = harts[0]._jit_code()[1]
    assert MOV_RAX_ADDEND not in text and ADD_RAX_ADDEND not in text
    assert CMP_RBX_ADDEND in text
    assert_same(harts, spaces, [(DATA, 8192)])


def test_a_way_into_a_loop_compares_the_addend_it_points_rcx_at():
    """The way into the first loop points rcx at the entry of its first access
    (carry_fix) and compares that entry's addend with rbx rather than loading it
    (before: ``mov rbx, [rcx + 8]`` there, which the loop's first load waited for)."""
    data = bytes(range(256)) * 32
    regs = {8: DATA + 0x1000 - 8 * 100, 6: TRIPS, 9: DATA + 0x800, 18: DATA + 0x1800,
            7: TRIPS // 2}
    harts, spaces = run_pair(_scan(), regs, TWO_BLOCKS, (DATA, data))
    text = harts[0]._jit_code()[1]
    assert re.search(TLB_INDEX + re.escape(CMP_RBX_ADDEND), text, re.DOTALL), text.hex()
    assert_same(harts, spaces, [(DATA, 8192)])


def _many_registers() -> bytes:
    """A loop using more guest registers than the pool holds: some bases live in
    x[] (the access adds the addend to the guest address in rax), alternating
    between the blocks."""
    body = []
    for i, rd in enumerate((10, 11, 12, 13, 14, 15, 16, 17)):
        body.append(_ld(rd, 8 * i, 9 if i % 2 == 0 else 18))   # ld aN, 8i(s1 / s2)
    for rd in (11, 12, 13, 14, 15, 16, 17):
        body.append(r_type(0, 0, 0x33, 10, 10, rd))           # add a0, a0, aN
    body += [
        r_type(0, 0, 0x33, 19, 19, 10),         # add s3, s3, a0
        _sd(19, 0, 20),                         # sd s3, 0(s4)  (block 1)
        _sd(10, 8, 21),                         # sd a0, 8(s5)  (block 0)
        i_type(16, 9, 0, 9, 0x13),              # addi s1, s1, 16
        i_type(16, 18, 0, 18, 0x13),            # addi s2, s2, 16
        i_type(8, 20, 0, 20, 0x13),             # addi s4, s4, 8
        i_type(8, 21, 0, 21, 0x13),             # addi s5, s5, 8
        i_type(-1, 6, 0, 6, 0x13),              # addi t1, t1, -1
    ]
    body.append(b_type(-4 * len(body), 0, 6, 1))       # bnez t1, loop
    return words([*body, 0x00100073])


def test_bases_in_memory_alternate_blocks_as_in_the_interpreter():
    data = bytes((i * 11 + 1) & 0xFF for i in range(8192))
    regs = {9: DATA, 18: DATA + 0x1000, 20: DATA + 0x1800, 21: DATA + 0x400, 6: 60}
    harts, spaces = run_pair(_many_registers(), regs, TWO_BLOCKS, (DATA, data))
    assert CMP_RBX_ADDEND in harts[0]._jit_code()[1]
    assert_same(harts, spaces, [(DATA, 8192)])

"""Compiled loads and stores that probe the TLB entry the last access of their
table probed (``probe_again`` in ``src/_fast/riscv_jit_mem.pxi``): when that entry
is another page's, the access must probe in full and reach its own page, and a
store that went through a slow path (a store into the page holding the code)
must leave the next one a safe entry to compare with.  Registers, memory and
instret must equal the interpreter's.
"""

from __future__ import annotations

import re

import pytest
from rv_jitpair import assert_same, run_pair, words
from rv_randprog import CODE, DATA, b_type, i_type, r_type, s_type

from vmforge.accel.interp import RiscvHart
from vmforge.memory import AddressSpace

TRIPS = 200
TWO_BLOCKS = [(DATA, 0x1000, False), (DATA + 0x1000, 0x1000, False)]  # two pages' entries
LD, SD = 3, 3


def _ld(rd: int, imm: int, rs1: int) -> int:
    return i_type(imm, rs1, LD, rd, 0x03)


def _sd(rs2: int, imm: int, rs1: int) -> int:
    return s_type(imm, rs2, rs1, SD)


def _program(code_gap: int) -> bytes:
    """A hot loop: s0 = the last doubleword of a data page, s1 = a spot in the code
    page ``code_gap`` bytes past the loop; t1 counts the trips down.  The two data
    pages are RAM blocks of their own, so an access through the other page's entry
    would reach the wrong host memory."""
    body = [
        _ld(10, 0, 8),                          # ld a0, 0(s0)     (page 0)
        _ld(11, 16, 8),                         # ld a1, 16(s0)    (page 1; rcx: page 0)
        r_type(0, 0, 0x33, 12, 10, 11),         # add a2, a0, a1
        i_type(1, 12, 0, 12, 0x13),             # addi a2, a2, 1
        _sd(12, 8, 8),                          # sd a2, 8(s0)     (page 1)
        _sd(10, -8, 8),                         # sd a0, -8(s0)    (page 0 again)
        _sd(12, 0, 9),                          # sd a2, 0(s1)     (the code page: a slow path)
        _sd(11, 8, 9),                          # sd a1, 8(s1)     (the same page, after it)
        _ld(13, 8, 8),                          # ld a3, 8(s0)
        _sd(13, 16, 8),                         # sd a3, 16(s0)
        i_type(-1, 6, 0, 6, 0x13),              # addi t1, t1, -1
    ]
    body.append(b_type(-4 * len(body), 0, 6, 1))   # bnez t1, loop
    head = [
        0x00000497,                             # auipc s1, 0
        i_type(code_gap, 9, 0, 9, 0x13),        # addi s1, s1, code_gap
        i_type(TRIPS, 0, 0, 6, 0x13),           # li t1, TRIPS
    ]
    words = head + body + [0x00100073]          # ebreak
    return b"".join(w.to_bytes(4, "little") for w in words)


@pytest.mark.parametrize("code_gap", [256, 1024])
def test_accesses_that_reuse_the_last_entry_match_the_interpreter(code_gap):
    data = bytes((i * 7) & 0xFF for i in range(8192))
    harts, spaces = run_pair(_program(code_gap), {8: DATA + 0x1000 - 8},
                             TWO_BLOCKS, (DATA, data))
    assert_same(harts, spaces, [(DATA, 8192), (CODE, 4096)])


def _loops() -> bytes:
    """Two loops whose first access is their head (rcx carried round them,
    probe_plan): the first entered just after a shift by a register (rcx = the
    count there) walks across the boundary of two data pages, the second, entered
    from the first (rcx: the read entry of the page it last read), stores to
    ``s1``."""
    sll, mulw = r_type(0, 1, 0x33, 29, 29, 30), r_type(1, 0, 0x3B, 11, 10, 12)
    first = [
        _ld(10, 0, 8),                          # loop1: ld a0, 0(s0)
        mulw,                                   # mulw a1, a0, a2  (leaves rcx alone)
        r_type(0, 0, 0x33, 13, 13, 11),         # add a3, a3, a1
        i_type(8, 8, 0, 8, 0x13),               # addi s0, s0, 8
        i_type(-1, 6, 0, 6, 0x13),              # addi t1, t1, -1
    ]
    first.append(b_type(-4 * len(first), 0, 6, 1))   # bnez t1, loop1
    second = [
        _sd(13, 0, 9),                          # loop2: sd a3, 0(s1)
        i_type(8, 9, 0, 9, 0x13),               # addi s1, s1, 8
        i_type(3, 13, 0, 13, 0x13),             # addi a3, a3, 3
        i_type(-1, 7, 0, 7, 0x13),              # addi t2, t2, -1
    ]
    second.append(b_type(-4 * len(second), 0, 7, 1))  # bnez t2, loop2
    words = [sll, *first, *second, 0x00100073]          # ebreak at the end
    return b"".join(w.to_bytes(4, "little") for w in words)


@pytest.mark.parametrize("readonly", [False, True], ids=["ram", "rom"])
def test_loops_carry_the_entry_of_their_last_access(readonly):
    """A loop's first access compares its tag with the entry its last access left
    in rcx on the trip before (probe_again at the loop head: fails before rcx was
    carried round loops), and every way into the loop leaves an entry of the
    right table there: a store into the read-only page the loop before it read
    from must not go through that page's read entry.  Registers, memory, the
    stop and instret equal the interpreter's."""
    from vmforge._fast.riscv import _jit_bounds

    data = bytes((i * 13 + 5) & 0xFF for i in range(8192))
    regs = {8: DATA + 0x1000 - 8 * 100, 6: TRIPS, 7: TRIPS, 12: 0x9E3779B9, 29: 0x1234, 30: 5}
    regs[9] = DATA + 0x1000 + 8 * 50 if readonly else regs[8]
    harts, spaces = run_pair(_loops(), regs, [(DATA, 0x1000, False), (DATA + 0x1000, 0x1000,
                             readonly)], (DATA, data), frozenset({3, 7}))
    assert _jit_bounds(harts[0])["probes_again"] >= 2, _jit_bounds(harts[0])
    assert_same(harts, spaces, [(DATA, 8192)])


# mov ecx, eax; shr ecx, 7; and ecx, 255 << 5; add rcx, [r15 + disp32]: a TLB index
TLB_INDEX = re.compile(rb"\x8b\xc8\xc1\xe9\x07\x81\xe1\xe0\x1f\x00\x00\x49\x03\x8f....", re.DOTALL)
MOV_RDX_RAX = b"\x48\x8b\xd0"       # a full probe's next instruction (the tag)


def test_a_way_into_a_loop_points_rcx_at_its_first_access_entry():
    """The region's entry into the first loop and the fall from it into the second
    (rcx: an entry of the other table) point rcx at the entry of the address the
    loop's first access will use (a TLB index not followed by a tag compare),
    not at an entry of the table that its tag compare would miss."""
    from vmforge._fast.riscv import _jit_bounds

    space = AddressSpace()
    space.add_ram(CODE, 1 << 20)
    space.add_ram(DATA, 0x2000)
    space.memory.load(CODE, _loops())
    hart = RiscvHart(space, pc=CODE, stop_on={3})
    hart.jit = True                 # (a test of the compiler, VMFORGE_JIT=0 or not)
    hart.x[8] = hart.x[9] = DATA + 0x1000 - 8 * 100
    hart.x[6] = hart.x[7] = TRIPS
    assert hart.run().cause == 3
    assert _jit_bounds(hart)["probes_again"] >= 2
    _addr, text = hart._jit_code()
    ways_in = [m for m in TLB_INDEX.finditer(text) if text[m.end():m.end() + 3] != MOV_RDX_RAX]
    assert len(ways_in) >= 2, text.hex()


# mov [rax + index], r64: an access through a cached base (Stub.sib: rax = the addend)
STORE_RAX_INDEX = re.compile(rb"[\x48-\x4f]\x89[\x04\x0c\x14\x1c\x24\x2c\x34\x3c]"
                             rb"[\x00\x08\x10\x18\x28\x30\x38]")


def test_a_store_through_a_cached_base_clears_the_reservation_on_its_bytes():
    """A compiled store whose base register is cached reads [addend + base + imm]
    (fails before that form); while a reservation is held it clears the one on
    the bytes it writes (the slow path is given the host address, not the
    addend): each sc.d after it fails, as in the interpreter."""
    lr_d = (0b00010 << 27) | (8 << 15) | (3 << 12) | (10 << 7) | 0x2F     # lr.d a0, (s0)
    sc_d = (0b00011 << 27) | (12 << 20) | (8 << 15) | (3 << 12) | (5 << 7) | 0x2F
    body = [
        lr_d,
        0x0040006F,                             # j .+4 (the store heads a region)
        _sd(11, 0, 18),                         # sd a1, 0(s2)   (s2 = s0)
        sc_d,                                   # sc.d t0, a2, (s0)
        r_type(0, 0, 0x33, 7, 7, 5),            # add t2, t2, t0
        i_type(-1, 6, 0, 6, 0x13),              # addi t1, t1, -1
    ]
    body.append(b_type(-4 * len(body), 0, 6, 1))      # bnez t1, loop
    regs = {8: DATA + 0x40, 18: DATA + 0x40, 6: TRIPS, 11: 0x1111, 12: 0x2222}
    harts, spaces = run_pair(words([*body, 0x00100073]), regs, [(DATA, 0x1000, False)])
    assert STORE_RAX_INDEX.search(harts[0]._jit_code()[1])
    assert harts[1].x[7] == TRIPS                # every sc.d failed
    assert_same(harts, spaces, [(DATA, 0x100)])


def _cross() -> bytes:
    """A loop whose accesses alternate tables through one base: a load then a store
    to the same word (p->n++), a load then a store a page away (the twin entry is
    another page's: a full probe), a store then a load."""
    body = [
        _ld(10, 0, 8),                          # ld a0, 0(s0)
        i_type(1, 10, 0, 10, 0x13),             # addi a0, a0, 1
        _sd(10, 0, 8),                          # sd a0, 0(s0)     (twin: the same page)
        _ld(11, 0, 18),                         # ld a1, 0(s2)     (page 0's last word)
        _sd(11, 8, 18),                         # sd a1, 8(s2)     (page 1: twin misses)
        _sd(10, -8, 18),                        # sd a0, -8(s2)    (page 0 again)
        _ld(12, 8, 18),                         # ld a2, 8(s2)     (twin of a store: page 1)
        r_type(0, 0, 0x33, 13, 13, 12),         # add a3, a3, a2
        i_type(8, 8, 0, 8, 0x13),               # addi s0, s0, 8
        i_type(-1, 6, 0, 6, 0x13),              # addi t1, t1, -1
    ]
    body.append(b_type(-4 * len(body), 0, 6, 1))   # bnez t1, loop
    return words([*body, 0x00100073])


def test_a_store_after_a_load_through_the_same_base_probes_the_twin_entry():
    """probe_cross: an access whose base the last access of the other table used
    compares its tag with the entry of the same index in its own table; where
    that is another page's, it probes in full.  The two data pages are RAM
    blocks of their own (a wrong entry would reach the wrong host memory).
    Registers, memory and instret equal the interpreter's."""
    from vmforge._fast.riscv import _jit_bounds

    data = bytes((i * 29 + 3) & 0xFF for i in range(8192))
    regs = {8: DATA + 0x100, 18: DATA + 0x1000 - 8, 6: TRIPS}
    harts, spaces = run_pair(_cross(), regs, TWO_BLOCKS, (DATA, data))
    assert _jit_bounds(harts[0])["probes_cross"] >= 3, _jit_bounds(harts[0])
    assert_same(harts, spaces, [(DATA, 8192)])

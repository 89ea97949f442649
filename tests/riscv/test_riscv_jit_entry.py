"""Ways into a compiled region at its other labels (riscv_jit_entry.pxi): a record
that gets hot inside a region that holds it as a label becomes a stub into that
region instead of a region of its own, with the same results and counts as the
interpreter; a store into the region's code unlinks its stubs with it."""

from __future__ import annotations

from rv_jitpair import words
from rv_randprog import DATA, b_type, i_type, s_type
from test_riscv_jit import _hart_pair, _jal

from vmforge.accel.interp import StopReason

TRIPS = 100
NEW = i_type(7, 7, 0, 7, 0x13)              # addi t2, t2, 7 (patched over the xor)


def _program() -> bytes:
    """Page A calls X on page B TRIPS times, then L (a label of X's region, the head
    of a loop whose first load expects rcx carried in), then patches L's loop and
    calls L again."""
    page_a = [
        i_type(TRIPS, 0, 0, 9, 0x13),       # 0: li s1, TRIPS
        _jal(1, 4096 - 4),                  # 4: jal ra, X
        i_type(-1, 9, 0, 9, 0x13),          # 8: addi s1, s1, -1
        b_type(-8, 0, 9, 1),                # 12: bnez s1, 4
        i_type(TRIPS, 0, 0, 9, 0x13),       # 16: li s1, TRIPS
        i_type(5, 0, 0, 6, 0x13),           # 20: li t1, 5
        _jal(1, 4096 + 8 - 24),             # 24: jal ra, L
        i_type(-1, 9, 0, 9, 0x13),          # 28: addi s1, s1, -1
        b_type(-12, 0, 9, 1),               # 32: bnez s1, 20
        (1 << 12) | (28 << 7) | 0x17,       # 36: auipc t3, 1
        i_type(-20, 28, 0, 28, 0x13),       # 40: addi t3, t3, -20 (-> L + 8, the xor)
        ((NEW >> 12) << 12) | (8 << 7) | 0x37,          # 44: lui s0, hi(NEW)
        i_type(NEW & 0xFFF, 8, 0, 8, 0x1B),             # 48: addiw s0, s0, lo(NEW)
        s_type(0, 8, 28, 2),                # 52: sw s0, 0(t3)
        0x0000100F,                         # 56: fence.i
        i_type(TRIPS, 0, 0, 9, 0x13),       # 60: li s1, TRIPS
        i_type(5, 0, 0, 6, 0x13),           # 64: li t1, 5
        _jal(1, 4096 + 8 - 68),             # 68: jal ra, L
        i_type(-1, 9, 0, 9, 0x13),          # 72: addi s1, s1, -1
        b_type(-12, 0, 9, 1),               # 76: bnez s1, 64
        0x00100073,                         # 80: ebreak
    ]
    assert NEW & 0x800 == 0
    page_b = [
        i_type(1, 0, 0, 6, 0x13),           # 0 X: li t1, 1 (L loops once)
        _jal(0, 4),                         # 4: j L
        i_type(0, 31, 2, 10, 0x03),         # 8 L: lw a0, 0(t6)
        (10 << 20) | (5 << 15) | (5 << 7) | 0x33,       # 12: add t0, t0, a0
        (5 << 20) | (7 << 15) | (4 << 12) | (7 << 7) | 0x33,    # 16: xor t2, t2, t0
        i_type(-1, 6, 0, 6, 0x13),          # 20: addi t1, t1, -1
        b_type(-16, 0, 6, 1),               # 24: bnez t1, L
        i_type(0, 1, 0, 0, 0x67),           # 28: ret
    ]
    return words(page_a).ljust(4096, b"\0") + words(page_b)


def test_hot_labels_enter_the_region_that_holds_them():
    regs = [0] * 32
    regs[31] = DATA
    harts, spaces = _hart_pair(_program(), bytes(range(256)) * 16, regs)
    for hart in harts:
        res = hart.run()
        assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    jit, ref = harts
    assert [jit.x[i] for i in range(32)] == [ref.x[i] for i in range(32)]
    assert jit.instret == ref.instret
    assert spaces[0].memory.read(0x8000_1000, 32) == spaces[1].memory.read(0x8000_1000, 32)
    stats = jit._stats()
    # L (and a loop head of page A) enter the regions that hold them: before, each
    # compiled a region of its own (6 regions, 4 now); the patched xor is run after
    # the store into L's region, which unlinked L's stub with it
    assert stats["jit_stubs"] >= 2, stats

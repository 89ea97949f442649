"""A hot loop through an instruction that crosses into the next page (busybox
ash's keyword search has one): the region holds it (riscv_jit.pxi, xpage_decode)
and checks at every run that the next page still holds its upper half where the
fetch TLB says, so the loop stays in compiled code; when that half changes, the
run loop runs the new instruction, as the interpreter does."""

from __future__ import annotations

from rv_jitpair import assert_same, run_pair
from rv_randprog import CODE, b_type, i_type, r_type, s_type
from test_riscv_jit import _jal

TRIPS = 2000
LOOP = 0xFF6
ADDI1 = i_type(1, 5, 0, 5, 0x13)           # addi t0, t0, 1: crosses the page at 0xffe
ADDI2 = i_type(2, 5, 0, 5, 0x13)           # addi t0, t0, 2: its lower half is the same


def _w(v: int) -> bytes:
    return v.to_bytes(4, "little")


def _program() -> bytes:
    """TRIPS trips of a loop whose third instruction crosses from the first page to
    the second; when t1 (counting down) reaches s2, the loop patches that
    instruction's upper half (s3) in the second page (s4 = its address)."""
    first = _w(i_type(TRIPS, 0, 0, 6, 0x13)) + _w(i_type(0, 0, 0, 5, 0x13)) + _w(_jal(0, LOOP - 8))
    first = first.ljust(LOOP, b"\0")
    first += _w(i_type(-1, 6, 0, 6, 0x13))          # loop: addi t1, t1, -1
    first += _w(r_type(0, 0, 0x33, 7, 7, 5))        # add t2, t2, t0
    crossing = _w(ADDI1)
    first += crossing[:2]
    assert len(first) == 4096
    second = crossing[2:]
    second += _w(b_type(8, 18, 6, 1))               # bne t1, s2, +8
    second += _w(s_type(0, 19, 20, 1))              # sh s3, 0(s4)
    second += _w(b_type(LOOP - 0x100A, 0, 6, 1))    # bnez t1, loop
    second += _w(0x00100073)                        # ebreak
    return first + second


def _run(patch_at: int):
    harts, spaces = run_pair(_program(), {18: patch_at, 19: ADDI2 >> 16, 20: CODE + 0x1000})
    assert_same(harts, spaces, [(CODE, 0x2000)])
    return harts[0]


def test_a_loop_through_a_page_crossing_instruction_stays_compiled():
    hart = _run(patch_at=-1)                        # (never: t1 stops at 0)
    assert hart.x[5] == TRIPS and hart.x[6] == 0
    # before, every trip left the region at the crossing instruction
    assert hart._stats()["jit_calls"] < TRIPS // 10, hart._stats()


def test_a_changed_upper_half_is_run_as_changed():
    hart = _run(patch_at=TRIPS // 2)
    first = TRIPS - TRIPS // 2                      # trips with the addi of 1
    assert hart.x[5] == first + 2 * (TRIPS - first)

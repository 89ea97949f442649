"""LR, SC, AMOs and F/D loads and stores in compiled code: a region runs them by
calling the interpreter's exec_slow (riscv_jit_mem.pxi, emit_exec) and goes on
after an access to plain RAM, so a hot loop holding them stays compiled; one that
faults or touches a page with code leaves as the run loop would have it."""

from __future__ import annotations

from rv_jitpair import assert_same, run_pair, words
from rv_randprog import CODE, b_type, i_type, r_type, s_type

DATA = 0x9000_0000
TRIPS = 1000


def _amo(f5: int, f3: int, rd: int, rs1: int, rs2: int) -> int:
    return r_type(f5 << 2, f3, 0x2F, rd, rs1, rs2)


def _loop() -> bytes:
    """FS on, then TRIPS trips of atomics and F/D loads and stores at s0; at trip s3 (t1
    counting down) the amoadd's address becomes s0 + a3 (a3 = 2: misaligned)."""
    prog = [
        (2 << 12) | (5 << 7) | 0x37,       # lui t0, 2 (mstatus.FS = initial)
        i_type(0x300, 5, 2, 0, 0x73),      # csrrs x0, mstatus, t0
        i_type(TRIPS, 0, 0, 6, 0x13),      # li t1, TRIPS
        b_type(8, 19, 6, 1),               # loop: bne t1, s3, +8
        r_type(0, 0, 0x33, 12, 0, 13),     # add a2, x0, a3 (the trip that faults)
        r_type(0, 0, 0x33, 14, 8, 12),     # add a4, s0, a2
        _amo(0, 2, 7, 14, 9),              # amoadd.w t2, s1, (a4)
        r_type(0, 0, 0x33, 28, 28, 7),     # add t3, t3, t2
        _amo(2, 2, 29, 8, 0),              # lr.w t4, (s0)
        i_type(1, 29, 0, 29, 0x13),        # addi t4, t4, 1
        _amo(3, 2, 30, 8, 29),             # sc.w t5, t4, (s0)
        r_type(0, 0, 0x33, 28, 28, 30),    # add t3, t3, t5
        i_type(8, 8, 3, 1, 0x07),          # fld f1, 8(s0)
        s_type(24, 1, 8, 2, 0x27),         # fsw f1, 24(s0)
        s_type(16, 1, 8, 3, 0x27),         # fsd f1, 16(s0)
        i_type(16, 8, 3, 10, 0x03),        # ld a0, 16(s0)
        r_type(0, 0, 0x33, 28, 28, 10),    # add t3, t3, a0
        _amo(1, 3, 11, 18, 6),             # amoswap.d a1, t1, (s2)
        r_type(0, 0, 0x33, 28, 28, 11),    # add t3, t3, a1
        i_type(-1, 6, 0, 6, 0x13),         # addi t1, t1, -1
        b_type(-68, 0, 6, 1),              # bnez t1, loop
        0x00100073,                        # ebreak
    ]
    return words(prog)


def _run(base: int, fault_at: int = -1, stop_on=frozenset({3}), swap: int = 64):
    regs = {8: base, 9: 3, 18: base + swap, 19: fault_at, 13: 2}
    data = (DATA, bytes(range(256)) * 16)
    harts, spaces = run_pair(_loop(), regs, rams=[(DATA, 1 << 16, False)], data=data,
                             stop_on=stop_on)
    assert_same(harts, spaces, [(DATA, 4096), (CODE, 4096)])
    assert harts[0].pc == harts[1].pc
    return harts[0]


def test_atomics_and_fp_accesses_stay_in_compiled_code():
    hart = _run(DATA)
    assert hart.x[6] == 0 and hart.x[28] != 0
    # before, each of them (seven a trip) took the loop out of compiled code
    assert hart._stats()["jit_calls"] < TRIPS // 10, hart._stats()


def test_an_amo_alone_on_its_page_stays_in_compiled_code():
    """The amoswap's page takes no plain store: its write-TLB entry is filled after
    the first AMO there (SC and AMOs translate without filling)."""
    hart = _run(DATA, swap=4096 + 64)
    assert hart._stats()["jit_calls"] < TRIPS // 10, hart._stats()


def test_an_atomic_that_faults_stops_where_the_interpreter_does():
    hart = _run(DATA, fault_at=TRIPS // 2, stop_on=frozenset({3, 6}))
    assert hart.x[6] == TRIPS // 2


def test_atomics_on_a_page_with_code_leave_after_each():
    hart = _run(CODE + 0x800)
    assert hart.x[6] == 0
    assert hart._stats()["jit_calls"] >= TRIPS - 100, hart._stats()

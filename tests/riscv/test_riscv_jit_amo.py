"""LR, SC and every AMO compiled inline (riscv_jit_amo.pxi): on plain RAM a region
runs them without calling the interpreter's exec_slow (one host atomic, or a lock
cmpxchg loop for amoor/and/xor keeping the old value and amomin/max[u]), with the
same results, reservations and memory as the interpreter; every other case (a
misaligned address, a page that is not plain RAM) still goes through the call.
The loop's ``sw`` into a reserved line is a compiled store whose base sits in rdi:
its slow path clearing the reservation read rdi after setting it (so the SC after
it succeeded)."""

from __future__ import annotations

import pytest
from rv_jitpair import assert_same, run_pair, words
from rv_randprog import b_type, i_type, r_type, s_type

DATA = 0x9000_0000
TRIPS = 1000
S0, S1, S2, S4 = 8, 9, 18, 20        # the lines the loop works on
T1, T3, T4, T5, A1, A2 = 6, 28, 29, 30, 11, 12


def _amo(f5: int, f3: int, rd: int, rs1: int, rs2: int) -> int:
    return r_type(f5 << 2, f3, 0x2F, rd, rs1, rs2)


def _acc(r: int) -> int:
    return r_type(0, 0, 0x33, T3, T3, r)           # add t3, t3, r


#: AMOs whose old value is kept (a compare-and-swap loop): funct5, width (2: W, 3: D),
#: address, operand -- amoor.w, amoand.d, amoxor.w, amomin.w (signed, 32 bits),
#: amomax.d, amominu.w, amomaxu.d
KEPT_OLD = [(8, 2, S2, T1), (12, 3, S4, T4), (4, 2, S2, T4), (16, 2, S2, T4),
            (20, 3, S4, T4), (24, 2, S2, T3), (28, 3, S4, T3)]


def _kept_old() -> list[int]:
    """Each of KEPT_OLD into a1, added into t3."""
    return [w for f5, f3, rs1, rs2 in KEPT_OLD for w in (_amo(f5, f3, A1, rs1, rs2), _acc(A1))]


def _body() -> list[int]:
    """One trip: every outcome of SC, and every AMO (with rd, x0, rd = rs2)."""
    return [
        _amo(2, 2, T4, S0, 0),          # lr.w t4, (s0)
        i_type(1, T4, 0, T4, 0x13),     # addi t4, t4, 1
        _amo(3, 2, T5, S0, T4),         # sc.w t5, t4, (s0): succeeds
        _acc(T5),
        _amo(3, 2, T5, S0, T4),         # sc.w again: no reservation, fails
        _acc(T5),
        _amo(2, 3, T4, S1, 0),          # lr.d t4, (s1)
        _amo(3, 3, T5, S0, T4),         # sc.d t5, t4, (s0): another line, fails, clears
        _acc(T5),
        _amo(3, 3, T5, S1, T4),         # sc.d t5, t4, (s1): cleared, fails
        _acc(T5),
        _amo(2, 2, T4, S0, 0),          # lr.w t4, (s0)
        s_type(4, T1, S0, 2),           # sw t1, 4(s0): the same line, clears it
        _amo(3, 2, T5, S0, T4),         # sc.w: fails
        _acc(T5),
        _amo(2, 3, T4, S1, 0),          # lr.d t4, (s1), twice
        _amo(2, 3, T4, S1, 0),
        r_type(0, 0, 0x33, T4, T4, T1),  # add t4, t4, t1
        _amo(3, 3, T5, S1, T4),         # sc.d t5, t4, (s1): succeeds
        _acc(T5),
        _amo(2, 2, A2, S2, 0),          # lr.w a2, (s2)
        _amo(1, 2, A1, S2, T1),         # amoswap.w a1, t1, (s2): clears it
        _acc(A1),
        _amo(3, 2, T5, S2, A1),         # sc.w t5, a1, (s2): fails
        _acc(T5),
        _amo(0, 2, A1, S2, T4),         # amoadd.w a1, t4, (s2)
        _acc(A1),
        _amo(1, 3, A1, S4, T4),         # amoswap.d a1, t4, (s4)
        _acc(A1),
        _amo(0, 3, A1, S4, T1),         # amoadd.d a1, t1, (s4)
        _acc(A1),
        _amo(0, 2, 0, S2, T1),          # amoadd.w x0, t1, (s2)
        _amo(8, 3, 0, S4, T1),          # amoor.d x0, t1, (s4)
        _amo(12, 2, 0, S2, T4),         # amoand.w x0, t4, (s2)
        _amo(4, 3, 0, S4, T4),          # amoxor.d x0, t4, (s4)
        *_kept_old(),
        _amo(16, 3, 0, S4, T3),         # amomin.d x0, t3, (s4)
        _amo(28, 2, A2, S2, 0),         # amomaxu.w a2, x0, (s2): the word unchanged
        _acc(A2),
        _amo(20, 2, A1, S2, A1),        # amomax.w a1, a1, (s2): rd = rs2
        _acc(A1),
        _amo(3, 2, A2, S2, A2),         # sc.w a2, a2, (s2): rd = rs2, no reservation
        _acc(A2),
        _amo(2, 3, S2, S2, 0),          # lr.d s2, (s2): rd = rs1
        _acc(S2),
        i_type(-8, S4, 0, S2, 0x13),    # addi s2, s4, -8: s2 again
    ]


def _loop() -> bytes:
    body = _body()
    prog = [i_type(TRIPS, 0, 0, T1, 0x13)]           # li t1, TRIPS
    prog += body
    n = len(body)
    prog += [
        i_type(-1, T1, 0, T1, 0x13),                 # addi t1, t1, -1
        b_type(-4 * (n + 1), 0, T1, 1),              # bnez t1, loop
        0x00100073,                                  # ebreak
    ]
    return words(prog)


def _run(smp: int):
    regs = {S0: DATA, S1: DATA + 256, S2: DATA + 512, S4: DATA + 520}
    data = (DATA, bytes(range(256)) * 16)
    harts, spaces = run_pair(_loop(), regs, rams=[(DATA, 1 << 16, False)], data=data,
                             smp=smp)
    assert_same(harts, spaces, [(DATA, 4096)])
    jit, ref = harts
    assert jit.x[T1] == 0 and jit.x[T3] != 0
    assert jit.reservations.active == ref.reservations.active
    return jit


@pytest.mark.parametrize("smp", [0, 1])
def test_lr_sc_and_every_amo_run_inline(smp):
    hart = _run(smp)
    # none calls exec_slow once compiled (before: every atomic did; then every
    # amoor/and/xor with its old value kept and every min/max, once a trip each)
    assert hart._stats()["exec_calls"] < 20, hart._stats()

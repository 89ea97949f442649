"""Compiled code that calls across pages: a way out of a region to another page
goes straight into the region headed there (riscv_jit.pxi, cross_page), with the
same results and counts as the interpreter."""

from __future__ import annotations

from rv_randprog import b_type, i_type
from test_riscv_jit import _hart_pair, _jal

from vmforge.accel.interp import StopReason

TRIPS = 1000


def _call_across_pages() -> bytes:
    """A loop on the first page calling a function on the second, TRIPS times."""
    loop = [
        i_type(TRIPS, 0, 0, 6, 0x13),      # li t1, TRIPS
        i_type(0, 0, 0, 5, 0x13),          # li t0, 0
        _jal(1, 4096 - 8),                 # loop: jal ra, func (the next page)
        i_type(-1, 6, 0, 6, 0x13),         # addi t1, t1, -1
        b_type(-8, 0, 6, 1),               # bnez t1, loop
        0x00100073,                        # ebreak
    ]
    func = [
        i_type(3, 5, 0, 5, 0x13),          # func: addi t0, t0, 3
        i_type(0, 1, 0, 0, 0x67),          # ret (jalr x0, 0(ra))
    ]
    first = b"".join(w.to_bytes(4, "little") for w in loop)
    return first.ljust(4096, b"\0") + b"".join(w.to_bytes(4, "little") for w in func)


def test_calls_across_pages_stay_in_compiled_code():
    harts, _ = _hart_pair(_call_across_pages(), bytes(4096), [0] * 32)
    for hart in harts:
        res = hart.run()
        assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
        assert hart.x[5] == 3 * TRIPS and hart.x[6] == 0
    jit, ref = harts
    assert jit.instret == ref.instret
    assert [jit.x[i] for i in range(32)] == [ref.x[i] for i in range(32)]
    stats = jit._stats()
    assert stats["jit_regions"] >= 2
    # without chaining across pages, every call and every return came back to
    # the run loop: about 2 * TRIPS region calls
    assert stats["jit_calls"] < TRIPS // 4, stats

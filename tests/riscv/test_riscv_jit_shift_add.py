"""``slli rd, rs, 1..3`` followed by ``add rd, rd, rb`` (an array's element without
Zba: ``slli a5, a5, 3; add a5, a5, a0; ld a1, 0(a5)``) compiles as one
``lea rd, [rb + rs * 2**n]`` (``shift_add_pair`` in ``src/_fast/riscv_jit_alu.pxi``).
Not where the add is a label (a jump lands between them), where it writes another
register, or adds the shift's result to itself.  Results equal the interpreter's,
with the registers involved in host registers or in memory.
"""

from __future__ import annotations

from rv_jitpair import assert_same, run_pair, words
from rv_randprog import DATA, b_type, i_type, r_type

EBREAK = 0x00100073


def _slli(rd: int, rs: int, n: int) -> int:
    return i_type(n, rs, 1, rd, 0x13)


def _add(rd: int, rs1: int, rs2: int) -> int:
    return r_type(0, 0, 0x33, rd, rs1, rs2)


def _ld(rd: int, rs1: int, imm: int = 0) -> int:
    return i_type(imm, rs1, 3, rd, 0x03)


def _addi(rd: int, rs1: int, imm: int) -> int:
    return i_type(imm, rs1, 0, rd, 0x13)


def _scaled_leas(code: bytes) -> set[int]:
    """The scales (1, 2, 4, 8) of the 64-bit ``lea r, [base + index * s]`` in
    ``code`` (REX.W 8d, ModRM rm=100 with no displacement or a disp8, then a SIB)."""
    found = set()
    for i in range(len(code) - 3):
        if 0x48 <= code[i] <= 0x4F and code[i + 1] == 0x8D and code[i + 2] & 0xC7 in (0x04, 0x44):
            found.add(1 << (code[i + 3] >> 6))
    return found


def _loop(body: list[int], counter: int = 5) -> list[int]:
    """``body`` then ``addi counter, counter, -1; bnez counter, <body>``."""
    body = [*body, _addi(counter, counter, -1)]
    return [*body, b_type(-4 * len(body), 0, counter, 1)]


def _program() -> bytes:
    """Sums of an array of dwords through three shapes of the pair (each fused),
    and three that must not be: the add a label, the add writing another register,
    the shift's result added to itself."""
    fused = _loop([
        _slli(6, 7, 3), _add(6, 6, 10), _ld(11, 6), _add(8, 8, 11),       # a[i], rd != rs
        _slli(28, 7, 2), _add(28, 10, 28), _ld(12, 28, 4), _add(9, 9, 12),  # add rb, rd
        _slli(29, 29, 1), _add(29, 29, 10), _ld(13, 29), _add(18, 18, 13),  # rd == rs
        _addi(29, 7, 0), _addi(7, 7, 1), i_type(63, 7, 7, 7, 0x13),          # i = (i+1) & 63
    ])
    # not fused: (a) the add is a jump's target, (b) add t4, t1, a0, (c) add t1, t1, t1
    skip = b_type(8, 0, 0, 0)                                     # beq x0, x0, +8: to the add
    unfused = _loop([
        skip, _slli(6, 7, 3), _add(6, 6, 10), _ld(11, 6), _add(8, 8, 11),
        _slli(6, 7, 3), _add(30, 6, 10), _ld(11, 30), _add(19, 19, 11), _add(19, 19, 6),
        _slli(6, 7, 1), _add(6, 6, 6), _add(20, 20, 6),
        _addi(7, 7, 1), i_type(63, 7, 7, 7, 0x13),
    ], counter=31)
    return words([*fused, _addi(6, 0, 16), *unfused, EBREAK])     # li t1, 16: in the array


def _regs() -> dict[int, int]:
    return {10: DATA, 5: 300, 31: 300, 7: 0, 29: 0}


def _data() -> tuple[int, bytes]:
    return DATA, b"".join(((i * 0x9E3779B97F4A7C15) & (2**64 - 1)).to_bytes(8, "little")
                          for i in range(64))


def test_shift_then_add_compiles_as_one_lea_and_matches_the_interpreter():
    harts, spaces = run_pair(_program(), _regs(), [(DATA, 0x1000, False)], data=_data())
    assert {8, 4, 2} <= _scaled_leas(harts[0]._jit_code()[1])
    assert_same(harts, spaces)


def _crowded() -> bytes:
    """The pair among more guest registers than the region keeps in host ones: the
    shift's source, the base or the result in memory."""
    body = [_slli(6, 7, 3), _add(6, 6, 10), _ld(11, 6), _add(8, 8, 11)]
    for rd in range(12, 28):                    # sixteen more registers, each used a lot
        body += [_addi(rd, rd, rd), _add(8, 8, rd)]
    body += [_slli(28, 7, 3), _add(28, 10, 28), _ld(29, 28), _add(9, 9, 29),
             _addi(7, 7, 1), i_type(63, 7, 7, 7, 0x13)]
    return words([*_loop(body), EBREAK])


def test_the_pair_with_registers_in_memory_matches_the_interpreter():
    harts, spaces = run_pair(_crowded(), _regs(), [(DATA, 0x1000, False)], data=_data())
    assert 8 in _scaled_leas(harts[0]._jit_code()[1])
    assert_same(harts, spaces)

"""The compiled tier (``riscv_jit.pxi``) against the interpreter: random hot
loops (ALU, M, C, loads and stores incl. misaligned and faulting, short
branches), self-modifying code, and division edge cases must leave the same
registers, pc, instret and memory as the interpreter, which
``test_riscv_differential.py`` checks against unicorn.  Needs nothing but
vmforge: the programs are encoded here.
"""

from __future__ import annotations

import os
import random

import pytest
from rv_randprog import (
    BASE_REG,
    CODE,
    DATA,
    MASK,
    R_OPS,
    b_type,
    i_type,
    make_loops,
    r_type,
    s_type,
)

from vmforge.accel.interp import RiscvHart, StopReason
from vmforge.memory import AddressSpace


def _hart_pair(code: bytes, data: bytes, regs: list[int]):
    harts, spaces = [], []
    for jit in (True, False):
        space = AddressSpace()
        space.add_ram(CODE, 1 << 20)
        space.add_ram(DATA, 1 << 16)
        space.memory.load(CODE, code)
        space.memory.load(DATA, data)
        hart = RiscvHart(space, pc=CODE, stop_on={3})
        hart.jit = jit
        for i in range(1, 32):
            hart.x[i] = regs[i]
        harts.append(hart)
        spaces.append(space)
    return harts, spaces


@pytest.mark.parametrize("seed", range(6))
def test_compiled_hot_loops_match_the_interpreter(seed):
    """Random loop bodies (ALU, M, C, loads/stores incl. misaligned, short branches)
    run hot enough to be compiled; registers, pc, instret and memory must equal
    the interpreter's (itself checked against unicorn above) after every loop."""
    rng = random.Random(1000 + seed)
    code, ends = make_loops(rng, blocks=12, per_block=30, trips=40)
    data = bytes(rng.randrange(256) for _ in range(4096))
    regs = [0] + [rng.choice([0, 1, MASK, 1 << 63, 0xFFFFFFFF, rng.randrange(1 << 64)])
                  for _ in range(31)]
    regs[BASE_REG] = DATA
    (jit, ref), (jspace, rspace) = _hart_pair(code, data, regs)
    for block, end in enumerate(ends):
        for hart in (jit, ref):
            res = hart.run()
            assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
            assert hart.pc == end
        for i in range(1, 32):
            assert jit.x[i] == ref.x[i], f"seed {seed} loop {block}: x{i} " \
                f"{jit.x[i]:#x} != interpreter {ref.x[i]:#x}"
        assert jit.instret == ref.instret, f"seed {seed} loop {block}: instret"
        assert jspace.memory.read(DATA, 4096) == rspace.memory.read(DATA, 4096), \
            f"seed {seed} loop {block}: data page differs"
        for hart in (jit, ref):
            hart.pc = end + 4
    assert jit._stats()["jit_regions"] > 0 and ref._stats()["jit_regions"] == 0


def test_compiled_loop_sees_its_own_code_patched():
    """A hot loop stores a new instruction into itself halfway: the compiled block
    must be dropped and the new instruction run from the next trip on."""
    new = i_type(100, 5, 0, 5, 0x13)                       # addi t0, t0, 100
    prog = [
        i_type(0, 0, 0, 5, 0x13),                          # li t0, 0
        i_type(100, 0, 0, 6, 0x13),                        # li t1, 100
        i_type(50, 0, 0, 9, 0x13),                         # li s1, 50
        0x00000397,                                        # auipc t2, 0
        i_type(0, 0, 0, 0, 0x13),                          # (patched below: addi t2 -> loop)
        ((new >> 12) << 12) | (8 << 7) | 0x37,             # lui s0, hi(new)
        i_type(new & 0xFFF, 8, 0, 8, 0x1B),                # addiw s0, s0, lo(new)
    ]
    loop = len(prog) * 4
    prog[4] = i_type(loop - 12, 7, 0, 7, 0x13)             # addi t2, t2, loop - (auipc)
    if new & 0x800:                                        # lui/addiw: carry into hi
        prog[5] = ((((new >> 12) + 1) & 0xFFFFF) << 12) | (8 << 7) | 0x37
    prog += [
        i_type(1, 5, 0, 5, 0x13),                          # loop: addi t0, t0, 1
        i_type(-1, 6, 0, 6, 0x13),                         # addi t1, t1, -1
        b_type(8, 9, 6, 1),                                # bne t1, s1, +8
        s_type(0, 8, 7, 2),                                # sw s0, 0(t2)
    ]
    prog.append(b_type(loop - 4 * len(prog), 0, 6, 1))     # bnez t1, loop
    prog.append(0x00100073)
    code = b"".join(w.to_bytes(4, "little") for w in prog)
    harts, _ = _hart_pair(code, bytes(4096), [0] * 32)
    for hart in harts:
        res = hart.run()
        assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
        assert hart.x[5] == 50 + 50 * 100, hex(hart.x[5])
    assert harts[0].instret == harts[1].instret
    assert harts[0]._stats()["jit_regions"] > 0


@pytest.mark.parametrize("seed", range(4))
def test_compiled_code_faults_like_the_interpreter(seed):
    """The data page ends the RAM, and the random loads and stores reach past it:
    access faults (and misaligned accesses) inside compiled loops must stop at the
    same instruction, with the same registers, memory and instret as the
    interpreter; the run then goes on after the faulting instruction."""
    rng = random.Random(2000 + seed)
    code, ends = make_loops(rng, blocks=8, per_block=30, trips=60)
    data = bytes(rng.randrange(256) for _ in range(4096))
    regs = [0] + [rng.choice([0, 1, MASK, rng.randrange(1 << 64)]) for _ in range(31)]
    regs[BASE_REG] = DATA + (1 << 16) - 1024     # offsets of 1024..2040 fault
    (jit, ref), (jspace, rspace) = _hart_pair(code, data, regs)
    faults = 0
    for hart in (jit, ref):
        hart.stop_on = {3, 5, 7}
    for block, end in enumerate(ends):
        while True:
            results = [hart.run() for hart in (jit, ref)]
            assert results[0] == results[1], f"seed {seed} loop {block}: {results}"
            for i in range(1, 32):
                assert jit.x[i] == ref.x[i], f"seed {seed} loop {block}: x{i}"
            assert jit.instret == ref.instret
            tail = DATA + (1 << 16) - 4096
            assert jspace.memory.read(tail, 4096) == rspace.memory.read(tail, 4096)
            res = results[0]
            assert res.reason is StopReason.EXCEPTION, res
            if res.cause == 3:
                assert res.pc == end
                break
            faults += 1
            for hart in (jit, ref):
                hart.pc = res.pc + 4               # the random loads/stores are 4 bytes
        for hart in (jit, ref):
            hart.pc = end + 4
    assert faults > 10 and jit._stats()["jit_regions"] > 0


def _rv_div(op: str, a: int, b: int) -> int:
    """RISC-V's M-extension division results (the spec's table), 64-bit unsigned."""
    w = op.endswith("w")
    bits = 32 if w else 64
    mask = (1 << bits) - 1
    a, b = a & mask, b & mask
    sa = a - (1 << bits) if a >> (bits - 1) else a
    sb = b - (1 << bits) if b >> (bits - 1) else b
    signed = op in ("div", "rem", "divw", "remw")
    x, y = (sa, sb) if signed else (a, b)
    if y == 0:
        res = -1 if op.startswith("div") else x
    elif signed and x == -(1 << (bits - 1)) and y == -1:
        res = x if op.startswith("div") else 0
    else:
        q = abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)
        res = q if op.startswith("div") else x - q * y
    res &= mask
    if w and res >> 31:
        res |= MASK ^ 0xFFFF_FFFF
    return res


def test_compiled_division_edge_cases():
    """Division by zero and MIN / -1, 64- and 32-bit, signed and not, inside a hot
    loop: the compiled code gives the spec's results (x86 would trap on both)."""
    ops = ["div", "divu", "rem", "remu", "divw", "divuw", "remw", "remuw", "mulhsu"]
    edge = [0, 1, MASK, 1 << 63, (1 << 63) - 1, 0xFFFF_FFFF, 0x8000_0000, 0x7FFF_FFFF,
            0xFFFF_FFFF_8000_0000, 7, MASK - 6]
    pairs = [(x, y) for x in edge for y in edge]
    stride = 16 + 8 * len(ops)
    data = b"".join(x.to_bytes(8, "little") + y.to_bytes(8, "little") + bytes(8 * len(ops))
                    for x, y in pairs)
    prog = [
        i_type(40, 0, 0, 29, 0x13),                       # li t4, 40 (rounds)
        # round: t6 = DATA (from t3), t5 = len(pairs)
        i_type(0, 28, 0, 31, 0x13),                       # mv t6, t3
        i_type(len(pairs), 0, 0, 30, 0x13),               # li t5, pairs
        i_type(0, 31, 3, 10, 0x03),                       # loop: ld a0, 0(t6)
        i_type(8, 31, 3, 11, 0x03),                       # ld a1, 8(t6)
    ]
    for k, op in enumerate(ops):
        f7, f3, opc = R_OPS[op]
        prog.append(r_type(f7, f3, opc, 12, 10, 11))      # op a2, a0, a1
        prog.append(s_type(16 + 8 * k, 12, 31, 3))        # sd a2, 16+8k(t6)
    loop = 3 * 4
    prog += [
        i_type(stride, 31, 0, 31, 0x13),                  # addi t6, t6, stride
        i_type(-1, 30, 0, 30, 0x13),                      # addi t5, t5, -1
    ]
    prog.append(b_type(loop - 4 * len(prog), 0, 30, 1))   # bnez t5, loop
    prog.append(i_type(-1, 29, 0, 29, 0x13))              # addi t4, t4, -1
    prog.append(b_type(4 - 4 * len(prog), 0, 29, 1))      # bnez t4, round
    prog.append(0x00100073)
    code = b"".join(w.to_bytes(4, "little") for w in prog)
    assert stride * len(pairs) < 1 << 16
    regs = [0] * 32
    regs[28] = DATA
    harts, spaces = _hart_pair(code, data, regs)
    for hart in harts:
        res = hart.run(10_000_000)
        assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert harts[0]._stats()["jit_regions"] > 0
    got = [spaces[i].memory.read(DATA, stride * len(pairs)) for i in (0, 1)]
    assert got[0] == got[1]
    for n, (x, y) in enumerate(pairs):
        base = n * stride + 16
        for k, op in enumerate(ops):
            value = int.from_bytes(got[0][base + 8 * k:base + 8 * k + 8], "little")
            if op == "mulhsu":
                sx = x - (1 << 64) if x >> 63 else x
                want = ((sx * y) >> 64) & MASK
            else:
                want = _rv_div(op, x, y)
            assert value == want, f"{op} {x:#x}, {y:#x}: {value:#x}, want {want:#x}"


def _mappings() -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, path) of each mapping of this process."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            out.append((lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return out


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
@pytest.mark.parametrize("two_views", [True, False], ids=["memfd", "flipped"])
def test_code_buffer_is_never_writable_and_executable(two_views):
    """W^X: after compiling hot code, the hart's code buffer shows no mapping both
    writable and executable: the code runs from a read-execute view and is
    written through another (or, where a second view is refused, one mapping is
    made writable only while compiling); the results match the interpreter's."""
    from vmforge._fast.riscv import _jit_set_two_views

    _jit_set_two_views(two_views)
    try:
        _check_wx()
    finally:
        _jit_set_two_views(True)


def _check_wx() -> None:
    rng = random.Random(7)
    code, ends = make_loops(rng, blocks=4, per_block=20, trips=40)
    regs = [0] * 32
    regs[BASE_REG] = DATA
    (jit, ref), _ = _hart_pair(code, bytes(4096), regs)
    for end in ends:
        for hart in (jit, ref):
            res = hart.run()
            assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
            hart.pc = end + 4
        assert [jit.x[i] for i in range(32)] == [ref.x[i] for i in range(32)]
    assert jit._stats()["jit_regions"] > 0
    addr, text = jit._jit_code()
    assert addr and text
    maps = _mappings()
    runs = [m for m in maps if m[0] < addr + len(text) and addr < m[1]]
    assert runs and all("x" in m[2] and "w" not in m[2] for m in runs), runs
    ours = [m for m in maps if "vmforge-jit" in m[3]] + runs
    assert not [m for m in ours if "w" in m[2] and "x" in m[2]], ours


def _jal(rd: int, imm: int) -> int:
    v = imm & 0x1FFFFF
    return (((v >> 20) & 1) << 31 | ((v >> 1) & 0x3FF) << 21 | ((v >> 11) & 1) << 20 |
            ((v >> 12) & 0xFF) << 12 | rd << 7 | 0x6F)


@pytest.mark.parametrize("seed", range(2))
def test_a_full_code_buffer_starts_over_and_stays_exact(seed):
    """When the code buffer is full, every compiled region is unlinked and the
    buffer is written again from its start (a whole shell session's code did not
    fit 32 MiB: it started over once a second).  With the buffer cut down to one
    region's room and a little more, the random loops start it over again and
    again, and still leave what the interpreter leaves."""
    from vmforge._fast.riscv import _jit_bounds, _jit_set_limit

    rng = random.Random(2000 + seed)
    code, ends = make_loops(rng, blocks=12, per_block=30, trips=40)
    data = bytes(rng.randrange(256) for _ in range(4096))
    regs = [0] + [rng.randrange(1 << 64) for _ in range(31)]
    regs[BASE_REG] = DATA
    (jit, ref), (jspace, rspace) = _hart_pair(code, data, regs)
    _jit_set_limit(1)                       # the least it takes: one region's room
    try:
        for _ in range(2):                  # twice: the loops compiled before a start
            for hart in (jit, ref):         # over run again (not their old code)
                hart.pc = CODE
            for end in ends:
                for hart in (jit, ref):
                    res = hart.run()
                    assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
                    assert hart.pc == end
                    hart.pc = end + 4
                assert [jit.x[i] for i in range(32)] == [ref.x[i] for i in range(32)]
                assert jit.instret == ref.instret
    finally:
        _jit_set_limit(0)
    assert jspace.memory.read(DATA, 4096) == rspace.memory.read(DATA, 4096)
    stats = jit._stats()
    assert stats["jit_resets"] >= 3 and stats["jit_regions"] > stats["jit_resets"], stats
    assert _jit_bounds(jit)["buffer"] >= 256 << 20


def test_emitter_stays_within_its_bounds():
    """The room the emitter keeps free (riscv_jit_contract.pxi) rests on bounds for
    one instruction's code, one slow path and a region's head: regions with many
    cached registers, loads and stores, and a jalr with eight return sites into
    its region (the largest ways out) stay within them, none is abandoned, and
    the layouts the code reads by offset are as it assumes."""
    from vmforge._fast.riscv import _jit_bounds, _jit_contracts

    assert all(_jit_contracts().values()), _jit_contracts()
    rng = random.Random(11)
    code, ends = make_loops(rng, blocks=6, per_block=40, trips=40)
    regs = [0] + [rng.randrange(1 << 64) for _ in range(31)]
    regs[BASE_REG] = DATA
    (loops, _), _ = _hart_pair(code, bytes(4096), regs)
    for end in ends:
        assert loops.run().cause == 3
        loops.pc = end + 4
    # a loop calling f from eight sites: f's jalr returns to any of them
    prog = [i_type(40, 0, 0, 6, 0x13)]                     # li t1, 40
    loop = len(prog)
    for i in range(8):
        prog.append(i_type(i + 1, 10, 0, 10, 0x13))        # addi a0, a0, i + 1
        prog.append(0)                                     # jal ra, f (below)
    prog.append(i_type(-1, 6, 0, 6, 0x13))                 # addi t1, t1, -1
    prog.append(b_type(4 * (loop - len(prog)), 0, 6, 1))   # bnez t1, loop
    prog.append(0x00100073)                                # ebreak
    f = len(prog)
    prog += [r_type(0, 0, 0x33, 11, 11, 10),               # f: add a1, a1, a0
             s_type(0, 11, BASE_REG, 3),                   # sd a1, 0(t6)
             i_type(0, 1, 0, 0, 0x67)]                     # jalr x0, 0(ra)
    for i, w in enumerate(prog):
        if w == 0:
            prog[i] = _jal(1, 4 * (f - i))
    calls = b"".join(w.to_bytes(4, "little") for w in prog)
    regs = [0] * 32
    regs[BASE_REG] = DATA
    harts, _ = _hart_pair(calls, bytes(4096), regs)
    for hart in harts:
        assert hart.run().cause == 3
    assert harts[0].x[11] == harts[1].x[11] and harts[0].instret == harts[1].instret
    for hart in (loops, harts[0]):
        b = _jit_bounds(hart)
        assert hart._stats()["jit_regions"] > 0 and b["abandoned"] == 0, b
        assert 0 < b["insn_seen"] <= b["insn_max"], b
        assert 0 < b["stub_seen"] <= b["stub_max"], b
        assert 0 < b["head_seen"] <= b["head_max"], b
        assert b["room"] < b["buffer"], b


@pytest.mark.parametrize(("fence", "smp", "mfence"), [
    (0x0330000F, 1, True),      # fence rw,rw on harts on threads: store->load needs mfence
    (0x0FF0000F, 1, True),      # fence iorw,iorw
    (0x0330000F, 0, False),     # one host thread: memory is in order, nothing to emit
    (0x8330000F, 1, False),     # fence.tso orders no store before a load
    (0x0230000F, 1, False),     # fence r,rw: no store before
    (0x0320000F, 1, True),      # fence rw,r: a store before, a load after
    (0x0310000F, 1, False),     # fence rw,w: no load after
])
def test_compiled_fence_orders_a_store_before_a_load(fence, smp, mfence):
    """Compiled code keeps the interpreter's fence rule (riscv_atomic.pxi,
    fence_needs_mfence): with other harts on threads a fence ordering a write
    before a read is an x86 mfence (0f ae f0), else nothing."""
    from vmforge._fast.riscv import _x86_encode

    code = b"".join(x.to_bytes(4, "little") for x in [
        i_type(2000, 0, 0, 5, 0x13),            # li t0, 2000
        fence,                                  # loop: fence
        i_type(-1, 5, 0, 5, 0x13),              # addi t0, t0, -1
        b_type(-8, 0, 5, 1),                    # bnez t0, loop
        0x00100073,                             # ebreak
    ])
    (jit, ref), _ = _hart_pair(code, bytes(64), [0] * 32)
    jit.smp = ref.smp = smp
    for hart in (jit, ref):
        res = hart.run()
        assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
    assert jit.x[5] == ref.x[5] == 0
    assert jit._stats()["jit_regions"] > 0
    _addr, text = jit._jit_code()
    assert (_x86_encode("mfence") in text) is mfence, text.hex()

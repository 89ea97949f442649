"""Differential test against unicorn (QEMU's RISC-V core): random user-level
instruction streams (RV64I + M + C, loads and stores on a data page, short
forward branches), registers and the data page compared after every block.

Blocks end with ``ebreak``: vmforge stops on cause 3, unicorn runs ``until`` it.
No cross compiler is needed: the instructions are encoded here.
"""

from __future__ import annotations

import random

import pytest

from vmforge.testing.oracles import require_module

unicorn = require_module("unicorn", "pip install unicorn (in vmforge's test extra)")
from rv_randprog import BASE_REG, CODE, DATA, MASK, make_program  # noqa: E402
from unicorn import UC_ARCH_RISCV, UC_MODE_RISCV64, Uc  # noqa: E402
from unicorn import riscv_const as rc  # noqa: E402

from vmforge.accel.interp import RiscvHart, StopReason  # noqa: E402
from vmforge.memory import AddressSpace  # noqa: E402


@pytest.mark.parametrize("seed", range(6))
def test_random_streams_match_unicorn(seed):
    rng = random.Random(seed)
    code, ends = make_program(rng, blocks=40, per_block=40)
    data = bytes(rng.randrange(256) for _ in range(4096))
    regs = [0] + [rng.choice([0, 1, MASK, 1 << 63, (1 << 63) - 1, 0xFFFFFFFF, 0x80000000,
                              rng.randrange(1 << 64)]) for _ in range(31)]
    regs[BASE_REG] = DATA

    space = AddressSpace()
    space.add_ram(CODE, 1 << 20)
    space.add_ram(DATA, 1 << 16)
    space.memory.load(CODE, code)
    space.memory.load(DATA, data)
    hart = RiscvHart(space, pc=CODE, stop_on={3})
    for i in range(1, 32):
        hart.x[i] = regs[i]

    mu = Uc(UC_ARCH_RISCV, UC_MODE_RISCV64)
    mu.mem_map(CODE, 1 << 20)
    mu.mem_map(DATA, 1 << 16)
    mu.mem_write(CODE, code)
    mu.mem_write(DATA, data)
    for i in range(1, 32):
        mu.reg_write(rc.UC_RISCV_REG_X0 + i, regs[i])

    pc = CODE
    for block, end in enumerate(ends):
        res = hart.run()
        assert res.reason is StopReason.EXCEPTION and res.cause == 3, res
        assert hart.pc == end
        mu.emu_start(pc, end)
        assert mu.reg_read(rc.UC_RISCV_REG_PC) == end
        for i in range(1, 32):
            mine, theirs = hart.x[i], mu.reg_read(rc.UC_RISCV_REG_X0 + i)
            assert mine == theirs, (f"seed {seed} block {block}: x{i} = {mine:#x}, "
                                    f"unicorn {theirs:#x}")
        assert space.memory.read(DATA, 4096) == bytes(mu.mem_read(DATA, 4096)), \
            f"seed {seed} block {block}: data page differs"
        pc = end + 4
        hart.pc = pc

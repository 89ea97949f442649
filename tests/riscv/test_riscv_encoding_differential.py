"""Random 32-bit encodings in every major opcode against unicorn: the same
legality (illegal-instruction trap or not: reserved funct fields, shift
amounts, rounding modes, FP formats, AMO functions...) and, for the integer
opcodes, the same registers and memory after one instruction.  FP values are
the FP differential's business (unicorn does not NaN-box)."""

from __future__ import annotations

import random

import pytest

from vmforge.testing.oracles import require_module

unicorn = require_module("unicorn", "pip install unicorn (in vmforge's test extra)")
from unicorn import UC_ARCH_RISCV, UC_ERR_EXCEPTION, UC_MODE_RISCV64, Uc, UcError  # noqa: E402
from unicorn import riscv_const as rc  # noqa: E402

from vmforge.accel.interp import RiscvHart, StopReason  # noqa: E402
from vmforge.memory import AddressSpace  # noqa: E402

CODE = 0x8000_0000
DATA = 0x8010_0000
OPCODES = [0x03, 0x07, 0x0F, 0x13, 0x17, 0x1B, 0x23, 0x27, 0x2F, 0x33, 0x37, 0x3B,
           0x43, 0x47, 0x4B, 0x4F, 0x53, 0x63, 0x67, 0x6F]
FP_OPCODES = {0x07, 0x27, 0x43, 0x47, 0x4B, 0x4F, 0x53}
MEMORY = {0x03: "load", 0x07: "load", 0x23: "store", 0x27: "store", 0x2F: "amo"}


def make_word(rng: random.Random) -> int:
    opc = rng.choice(OPCODES)
    w = (rng.getrandbits(25) << 7) | opc
    if opc in MEMORY:
        w = (w & ~(31 << 15)) | (8 << 15)               # base register x8 -> data page
        if MEMORY[opc] == "load":
            w &= ~(0x7FF << 20)                          # offset 0..2047: in the page
        elif MEMORY[opc] == "store":
            w &= ~((0x7F << 25) | (31 << 7))
            w |= rng.randrange(64) << 25
    return w


@pytest.mark.parametrize("seed", range(3))
def test_random_encodings_match_unicorn(seed):
    rng = random.Random(seed)
    space = AddressSpace()
    space.add_ram(CODE, 0x10000)
    space.add_ram(DATA, 0x2000)
    space.on_bad_access = None
    hart = RiscvHart(space, pc=CODE)
    hart.ext_zb = False          # unicorn (QEMU 5.0) has no Zba/Zbb/Zbc/Zbs
    mu = Uc(UC_ARCH_RISCV, UC_MODE_RISCV64)
    mu.mem_map(CODE, 0x10000)
    mu.mem_map(DATA, 0x2000)
    data = bytes(rng.randrange(256) for _ in range(0x2000))
    compared = illegal = 0
    for _ in range(2500):
        w = make_word(rng)
        code = w.to_bytes(4, "little") + b"\x02\x90"       # then c.ebreak
        space.memory.write(CODE, code)
        space.memory.write(DATA, data)
        hart.flush_caches()
        hart.reset(CODE)
        hart.set_csr("mstatus", 1 << 13)
        hart.stop_on = set(range(16))
        mu.mem_write(CODE, code)
        mu.mem_write(DATA, data)
        mu.ctl_remove_cache(CODE, CODE + 0x1000)
        mu.reg_write(rc.UC_RISCV_REG_MSTATUS, 1 << 13)
        mu.reg_write(rc.UC_RISCV_REG_FCSR, 0)
        for i in range(32):
            if i:
                v = DATA + 0x800 if i == 8 else (0x0123_4567_89AB_CDEF * i) & ((1 << 64) - 1)
                hart.x[i] = v
                mu.reg_write(rc.UC_RISCV_REG_X0 + i, v)
            f = (0xFFFF_FFFF_3F80_0000 + i) if i < 16 else (0x3FF0_0000_0000_0000 + i)
            hart.f[i] = f
            mu.reg_write(rc.UC_RISCV_REG_F0 + i, f)
        res = hart.run(1)
        mine_illegal = res.reason is StopReason.EXCEPTION and res.cause == 2
        faulted = False
        try:
            mu.emu_start(CODE, CODE + 0x1000, count=1)
            theirs_illegal = False
        except UcError as e:
            theirs_illegal = e.errno == UC_ERR_EXCEPTION
            faulted = not theirs_illegal
        assert mine_illegal == theirs_illegal, f"{w:#010x}: illegal {mine_illegal} vs unicorn"
        if mine_illegal:
            illegal += 1
            continue
        if faulted or (w & 0x7F) in FP_OPCODES or (res.reason is StopReason.EXCEPTION
                                                    and res.cause != 3):
            continue
        compared += 1
        assert hart.pc == mu.reg_read(rc.UC_RISCV_REG_PC), f"{w:#010x}: pc"
        for i in range(1, 32):
            assert hart.x[i] == mu.reg_read(rc.UC_RISCV_REG_X0 + i), f"{w:#010x}: x{i}"
        assert space.memory.read(DATA, 0x2000) == bytes(mu.mem_read(DATA, 0x2000)), \
            f"{w:#010x}: memory"
    assert compared > 500 and illegal > 200

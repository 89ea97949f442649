"""Every 16-bit encoding (quadrants 0-2) against unicorn: the same legality
(illegal-instruction trap or not) and, when legal, the same registers, pc and
data memory after one instruction.  Registers point into a data page so the
compressed loads and stores find memory.

Two groups the C spec reserves are decoded by unicorn's older QEMU and are
illegal here, as the spec says: quadrant 0 funct3 100 (Zcb's, later) and
c.subw/c.addw's neighbours with funct2 10 and 11."""

from __future__ import annotations

from vmforge.testing.oracles import require_module

unicorn = require_module("unicorn", "pip install unicorn (in vmforge's test extra)")
from unicorn import UC_ARCH_RISCV, UC_ERR_EXCEPTION, UC_MODE_RISCV64, Uc, UcError  # noqa: E402
from unicorn import riscv_const as rc  # noqa: E402

from vmforge.accel.interp import RiscvHart, StopReason  # noqa: E402
from vmforge.memory import AddressSpace  # noqa: E402

CODE = 0x8000_0000
DATA = 0x8010_0000


def reserved_in_spec(h: int) -> bool:
    if h & 3 == 0 and h >> 13 == 4:
        return True
    return h & 3 == 1 and h >> 13 == 4 and (h >> 10) & 7 == 7 and (h >> 5) & 3 >= 2


def reg_values():
    # x8..x15 (the c. registers) and sp point into the data page; others are arbitrary
    vals = [0] * 32
    for i in range(1, 32):
        vals[i] = DATA + 0x400 + 8 * i if (8 <= i <= 15 or i == 2) else \
            (0x0123_4567_89AB_CDEF * i) & ((1 << 64) - 1)
    return vals


def test_compressed_encodings_match_unicorn():
    regs = reg_values()
    data = bytes((i * 37 + 11) & 0xFF for i in range(4096))
    space = AddressSpace()
    space.add_ram(CODE, 0x10000)
    space.add_ram(DATA, 0x1000)
    hart = RiscvHart(space, pc=CODE, stop_on=set(range(16)))
    mu = Uc(UC_ARCH_RISCV, UC_MODE_RISCV64)
    mu.mem_map(CODE, 0x10000)
    mu.mem_map(DATA, 0x1000)
    checked = illegal = 0
    for h in range(0x10000):
        if h & 3 == 3:
            continue
        code = h.to_bytes(2, "little") + b"\x02\x90"             # then c.ebreak
        space.memory.write(CODE, code)
        space.memory.write(DATA, data)
        hart.flush_caches()
        hart.reset(CODE)
        hart.set_csr("mstatus", 1 << 13)
        hart.stop_on = set(range(16))
        mu.mem_write(CODE, code)
        mu.ctl_remove_cache(CODE, CODE + 0x1000)                # drop unicorn's translation
        mu.mem_write(DATA, data)
        mu.reg_write(rc.UC_RISCV_REG_MSTATUS, 1 << 13)
        for i in range(32):
            if i:
                hart.x[i] = regs[i]
                mu.reg_write(rc.UC_RISCV_REG_X0 + i, regs[i])
            hart.f[i] = regs[i] ^ 0x5A5A
            mu.reg_write(rc.UC_RISCV_REG_F0 + i, regs[i] ^ 0x5A5A)
        res = hart.run(1)
        mine_illegal = res.reason is StopReason.EXCEPTION and res.cause == 2
        try:
            mu.emu_start(CODE, CODE + 0x1000, count=1)
            theirs_illegal = False
        except UcError as e:             # or a jump to unmapped memory: compare the pc
            theirs_illegal = e.errno == UC_ERR_EXCEPTION
        if reserved_in_spec(h):
            assert mine_illegal, f"{h:#06x} is reserved"
            continue
        assert mine_illegal == theirs_illegal, f"{h:#06x}: illegal {mine_illegal} vs unicorn"
        if mine_illegal:
            illegal += 1
            continue
        # one instruction, then the c.ebreak stops us (or the budget, after a jump)
        assert res.reason is StopReason.BUDGET or res.cause == 3, (hex(h), res)
        if h == 0x9002:
            continue
        checked += 1
        assert hart.instret == 1, hex(h)
        assert hart.pc == mu.reg_read(rc.UC_RISCV_REG_PC), hex(h)
        for i in range(32):
            assert hart.x[i] == mu.reg_read(rc.UC_RISCV_REG_X0 + i), f"{h:#06x}: x{i}"
            assert hart.f[i] == mu.reg_read(rc.UC_RISCV_REG_F0 + i), f"{h:#06x}: f{i}"
        assert space.memory.read(DATA, 4096) == bytes(mu.mem_read(DATA, 4096)), f"{h:#06x}"
    assert checked > 40000 and illegal > 200

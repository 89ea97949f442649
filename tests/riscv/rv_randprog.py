"""Random RISC-V programs for the CPU's differential tests, encoded here (no
cross compiler): user-level instruction streams (RV64I + M + C, loads and
stores on a data page through ``t6``, short forward branches), and counted
loops of such bodies hot enough for the compiled tier.

Imported by ``test_riscv_differential.py`` (against unicorn) and
``test_riscv_jit.py`` (compiled code against the interpreter); the conftest
puts this directory on ``sys.path``.
"""

from __future__ import annotations

import random

CODE = 0x8000_0000
DATA = 0x8010_0000
BASE_REG = 31                 # t6 holds DATA; never a destination
MASK = (1 << 64) - 1

R_OPS = {  # name: (funct7, funct3, opcode)
    "add": (0, 0, 0x33), "sub": (0x20, 0, 0x33), "sll": (0, 1, 0x33), "slt": (0, 2, 0x33),
    "sltu": (0, 3, 0x33), "xor": (0, 4, 0x33), "srl": (0, 5, 0x33), "sra": (0x20, 5, 0x33),
    "or": (0, 6, 0x33), "and": (0, 7, 0x33),
    "mul": (1, 0, 0x33), "mulh": (1, 1, 0x33), "mulhsu": (1, 2, 0x33), "mulhu": (1, 3, 0x33),
    "div": (1, 4, 0x33), "divu": (1, 5, 0x33), "rem": (1, 6, 0x33), "remu": (1, 7, 0x33),
    "addw": (0, 0, 0x3B), "subw": (0x20, 0, 0x3B), "sllw": (0, 1, 0x3B), "srlw": (0, 5, 0x3B),
    "sraw": (0x20, 5, 0x3B), "mulw": (1, 0, 0x3B), "divw": (1, 4, 0x3B), "divuw": (1, 5, 0x3B),
    "remw": (1, 6, 0x3B), "remuw": (1, 7, 0x3B),
}
I_OPS = {"addi": 0, "slti": 2, "sltiu": 3, "xori": 4, "ori": 6, "andi": 7}
LOADS = {"lb": 0, "lh": 1, "lw": 2, "ld": 3, "lbu": 4, "lhu": 5, "lwu": 6}
STORES = {"sb": 0, "sh": 1, "sw": 2, "sd": 3}
BRANCHES = [0, 1, 4, 5, 6, 7]


def r_type(f7, f3, opc, rd, rs1, rs2):
    return (f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | opc


def i_type(imm, rs1, f3, rd, opc):
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | opc


def s_type(imm, rs2, rs1, f3, opc=0x23):
    return (((imm >> 5) & 0x7F) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) \
        | ((imm & 0x1F) << 7) | opc


def b_type(imm, rs2, rs1, f3):
    return (((imm >> 12) & 1) << 31) | (((imm >> 5) & 0x3F) << 25) | (rs2 << 20) \
        | (rs1 << 15) | (f3 << 12) | (((imm >> 1) & 0xF) << 8) | (((imm >> 11) & 1) << 7) | 0x63


class Gen:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def reg(self):
        return self.rng.randrange(1, 31)            # not t6

    def src(self):
        return self.rng.randrange(0, 32)

    def imm12(self):
        return self.rng.choice([0, 1, -1, 2047, -2048, self.rng.randrange(-2048, 2048)])

    def one(self) -> list[tuple[int, int]]:
        """A list of (encoding, length) — one instruction, or a branch plus its victim."""
        rng = self.rng
        k = rng.random()
        if k < 0.35:
            f7, f3, opc = R_OPS[rng.choice(list(R_OPS))]
            return [(r_type(f7, f3, opc, self.reg(), self.src(), self.src()), 4)]
        if k < 0.5:
            f3 = I_OPS[rng.choice(list(I_OPS))]
            return [(i_type(self.imm12(), self.src(), f3, self.reg(), 0x13), 4)]
        if k < 0.58:
            kind = rng.randrange(7)
            rd, rs1 = self.reg(), self.src()
            if kind == 0:
                return [(i_type(rng.randrange(64), rs1, 1, rd, 0x13), 4)]           # slli
            if kind == 1:
                return [(i_type(rng.randrange(64), rs1, 5, rd, 0x13), 4)]           # srli
            if kind == 2:
                return [(i_type(0x400 | rng.randrange(64), rs1, 5, rd, 0x13), 4)]   # srai
            if kind == 3:
                return [(i_type(self.imm12(), rs1, 0, rd, 0x1B), 4)]               # addiw
            if kind == 4:
                return [(i_type(rng.randrange(32), rs1, 1, rd, 0x1B), 4)]           # slliw
            if kind == 5:
                return [(i_type(rng.randrange(32), rs1, 5, rd, 0x1B), 4)]           # srliw
            return [(i_type(0x400 | rng.randrange(32), rs1, 5, rd, 0x1B), 4)]       # sraiw
        if k < 0.62:
            return [((rng.randrange(1 << 20) << 12) | (self.reg() << 7) | 0x37, 4)]  # lui
        if k < 0.7:
            name = rng.choice(list(LOADS))
            size = 1 << (LOADS[name] & 3)
            off = rng.randrange(0, 2048 - 8)
            if rng.random() < 0.7:
                off &= ~(size - 1)                          # mostly aligned
            return [(i_type(off, BASE_REG, LOADS[name], self.reg(), 0x03), 4)]
        if k < 0.78:
            f3 = STORES[rng.choice(list(STORES))]
            off = rng.randrange(0, 2048 - 8)
            if rng.random() < 0.7:
                off &= ~((1 << f3) - 1)
            return [(s_type(off, self.src(), BASE_REG, f3), 4)]
        if k < 0.85:                                     # branch over the next instruction
            victim = self.one_simple()
            return [(b_type(4 + victim[1], self.src(), self.src(), rng.choice(BRANCHES)), 4),
                    victim]
        return [self.compressed()]

    def one_simple(self):
        f7, f3, opc = R_OPS[self.rng.choice(list(R_OPS))]
        if self.rng.random() < 0.5:
            return self.compressed()
        return (r_type(f7, f3, opc, self.reg(), self.src(), self.src()), 4)

    def compressed(self):
        rng = self.rng
        k = rng.randrange(11)
        rd = self.reg()
        rdp = rng.randrange(8)                       # x8..x15
        rs2p = rng.randrange(8)
        imm6 = rng.randrange(64)
        if k == 0:                                   # c.addi
            return ((0 << 13) | ((imm6 >> 5) << 12) | (rd << 7) | ((imm6 & 31) << 2) | 1, 2)
        if k == 1:                                   # c.addiw (rd != 0)
            return ((1 << 13) | ((imm6 >> 5) << 12) | (rd << 7) | ((imm6 & 31) << 2) | 1, 2)
        if k == 2:                                   # c.li
            return ((2 << 13) | ((imm6 >> 5) << 12) | (rd << 7) | ((imm6 & 31) << 2) | 1, 2)
        if k == 3:                                   # c.lui (rd != 2, imm != 0)
            imm6 = imm6 or 1
            rd = rd if rd != 2 else 5
            return ((3 << 13) | ((imm6 >> 5) << 12) | (rd << 7) | ((imm6 & 31) << 2) | 1, 2)
        if k in (4, 5, 6):                           # c.srli c.srai c.andi
            f2 = k - 4
            return ((4 << 13) | ((imm6 >> 5) << 12) | (f2 << 10) | (rdp << 7)
                    | ((imm6 & 31) << 2) | 1, 2)
        if k == 7:                                   # c.sub c.xor c.or c.and c.subw c.addw
            w = rng.randrange(2)
            f = rng.randrange(4 if not w else 2)
            return ((4 << 13) | (w << 12) | (3 << 10) | (rdp << 7) | (f << 5)
                    | (rs2p << 2) | 1, 2)
        if k == 8:                                   # c.slli (shamt != 0)
            imm6 = imm6 or 1
            return ((0 << 13) | ((imm6 >> 5) << 12) | (rd << 7) | ((imm6 & 31) << 2) | 2, 2)
        rs2 = rng.randrange(1, 32)
        if k == 9:                                   # c.mv
            return ((4 << 13) | (rd << 7) | (rs2 << 2) | 2, 2)
        return ((4 << 13) | (1 << 12) | (rd << 7) | (rs2 << 2) | 2, 2)   # c.add


def make_program(rng: random.Random, blocks: int, per_block: int):
    gen = Gen(rng)
    code = bytearray()
    ends = []
    for _ in range(blocks):
        n = 0
        while n < per_block:
            for enc, length in gen.one():
                code += enc.to_bytes(length, "little")
                n += 1
        ends.append(CODE + len(code))
        code += (0x00100073).to_bytes(4, "little")          # ebreak
    return bytes(code), ends


# -- hot loops for the compiled tier -------------------------------------------------------

LOOP_REG = 30                 # t5 counts the trips of each loop; never a random destination


class LoopGen(Gen):
    def reg(self):
        return self.rng.randrange(1, 30)

    def one(self) -> list[tuple[int, int]]:
        if self.rng.random() < 0.03:
            return [(0x0FF0000F, 4)]                     # fence iorw, iorw (compiled: none)
        return super().one()


def make_loops(rng: random.Random, blocks: int, per_block: int, trips: int):
    """Random bodies, each run ``trips`` times by a counted loop, then ``ebreak``."""
    gen = LoopGen(rng)
    code = bytearray()
    ends = []
    for _ in range(blocks):
        code += i_type(trips, 0, 0, LOOP_REG, 0x13).to_bytes(4, "little")   # li t5, trips
        start = len(code)
        n = 0
        while n < per_block:
            for enc, length in gen.one():
                code += enc.to_bytes(length, "little")
                n += 1
        code += i_type(-1, LOOP_REG, 0, LOOP_REG, 0x13).to_bytes(4, "little")
        code += b_type(start - len(code), 0, LOOP_REG, 1).to_bytes(4, "little")  # bnez t5
        ends.append(CODE + len(code))
        code += (0x00100073).to_bytes(4, "little")
    return bytes(code), ends

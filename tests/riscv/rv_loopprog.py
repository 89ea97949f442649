"""Random loop-heavy bare-metal RISC-V programs, encoded here (no cross compiler),
for the compiled tier's differential tests (``test_riscv_random_loops.py``).

A program starts in M-mode at ``CODE`` with its own M-mode trap handler and
reports through the virt UART and the SiFive test device, so the same image
runs on vmforge and on ``qemu-system-riscv64 -M virt -bios none``.  Its body
runs in M-mode, or (odd seeds) in S-mode under Sv39 (``PT``: gigapages, one
read-only alias, one hole), where the compiled loads and stores go through the
MMU and the traps add ecall from S and load/store page faults (unmapped,
read-only, non-canonical addresses).  The body is made of

- counted loops nested two deep (``t4`` outer, ``t5`` inner), hot enough to be
  compiled, whose bodies are random instructions: RV64I + M + C (from
  ``rv_randprog``), loads and stores of every width on the data page (``t6``,
  misaligned ones included), F/D arithmetic, conversions, compares and moves
  with static and dynamic rounding, A (AMOs, LR/SC pairs), Zba/Zbb/Zbc/Zbs,
  CSR accesses (frm, fflags, fcsr, m/sscratch, sfence.vma; instret/cycle/time
  but with ``qemu``), and stores into a slot of the code page next to the code;
- leaf functions (with a loop of their own, ``s7``) called by ``jal`` and by
  ``jalr`` through a computed address, returning by ``jalr``/``c.jr``;
- traps: ecall, ebreak, illegal instructions (reserved rounding mode, a write
  to a read-only CSR, a custom-0 opcode), access faults on loads, stores, FP
  and AMOs outside memory, misaligned AMOs and LR/SC;
- timer interrupts, Sstc's (``stimecmp = time + D``) or the CLINT's
  (``mtimecmp = mtime + D``), armed before random code or a loop, then a spin
  on the pending flag ``s9`` until the handler clears it.

With ``qemu=True`` the program leaves out what QEMU 7.2 does differently from
vmforge (which follows the ISA there): counter reads (QEMU's are host time), and
AMOs/SC that fault or are misaligned (QEMU 7.2 runs an AMO as a load then a
store when single-threaded, so it raises load faults, 4 and 5, instead of
store/AMO ones, 6 and 7; a misaligned SC without a reservation fails there
without trapping).

The handler logs every exception's (mcause, mepc, mtval) at ``LOG`` (``s11``)
and resumes after the instruction; interrupts disarm the timer and log
(mepc, mcause) at ``IRQLOG`` (``s8``), which is not printed: on QEMU the time
is the host's, so where an interrupt lands is not deterministic there (on
vmforge the time counts instructions, and the compiled tier must take it at
the interpreter's instruction).  Nothing the program prints depends on it.
At the end the registers, FP registers and fcsr (``DUMP``), the data page and
the exception log are written to the UART, then 0x5555 to the test device.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rv_randprog import MASK, R_OPS, Gen, b_type, i_type, r_type, s_type

CODE = 0x8000_0000
DATA = 0x8010_0000            # the data page (t6); its initial bytes are in the image
INIT = DATA + 0x1000          # initial x and f registers and fcsr (in the image)
DUMP = DATA + 0x2000          # x[32], f[32], fcsr: written at the end
LOG = DATA + 0x4000           # exception log, 24 bytes an entry
IRQLOG = DATA + 0x10_0000     # interrupt log, 16 bytes an entry (not printed)
BAD = 0x9000_0000             # no memory there (RAM ends at 0x8200_0000 / 0x8800_0000)
PT = DATA + 0x3000            # S-mode programs: Sv39 root table (in the image): gigapages
RO_ALIAS = 0xC010_0000        # VA 0xC000_0000: RAM again, read-only; 0x4000_0000: unmapped
TEST_DEV = 0x10_0000
CLINT_MTIMECMP = 0x200_4000   # hart 0's (virt's CLINT at 0x200_0000)
CLINT_MTIME = 0x200_BFF8
UART = 0x1000_0000
CODE_MAX = DATA - CODE

RA, SP = 1, 2
FCNT, IRQP, PEND, HSCR, LOGP, ADDR, OUTER, INNER, BASE = 23, 24, 25, 26, 27, 28, 29, 30, 31
DESTS = list(range(2, 23))            # random destinations: never a reserved register
SRCS = [0, RA, *DESTS, FCNT, LOGP, OUTER, INNER, BASE]   # deterministic everywhere
# registers whose final value depends on where interrupts landed (zeroed in DUMP)
VOLATILE = (PEND, HSCR, ADDR)

ECALL, EBREAK, MRET = 0x00000073, 0x00100073, 0x30200073

AMO_F5 = {"amoadd": 0x00, "amoswap": 0x01, "amoxor": 0x04, "amoor": 0x08, "amoand": 0x0C,
          "amomin": 0x10, "amomax": 0x14, "amominu": 0x18, "amomaxu": 0x1C}
ZB_R = {  # name: (funct7, funct3, opcode)
    "sh1add": (0x10, 2, 0x33), "sh2add": (0x10, 4, 0x33), "sh3add": (0x10, 6, 0x33),
    "add.uw": (0x04, 0, 0x3B), "sh1add.uw": (0x10, 2, 0x3B), "sh2add.uw": (0x10, 4, 0x3B),
    "sh3add.uw": (0x10, 6, 0x3B), "andn": (0x20, 7, 0x33), "orn": (0x20, 6, 0x33),
    "xnor": (0x20, 4, 0x33), "max": (0x05, 6, 0x33), "maxu": (0x05, 7, 0x33),
    "min": (0x05, 4, 0x33), "minu": (0x05, 5, 0x33), "rol": (0x30, 1, 0x33),
    "ror": (0x30, 5, 0x33), "rolw": (0x30, 1, 0x3B), "rorw": (0x30, 5, 0x3B),
    "clmul": (0x05, 1, 0x33), "clmulr": (0x05, 2, 0x33), "clmulh": (0x05, 3, 0x33),
    "bclr": (0x24, 1, 0x33), "bext": (0x24, 5, 0x33), "binv": (0x34, 1, 0x33),
    "bset": (0x14, 1, 0x33),
}
ZB_U = {  # name: (imm12, funct3, opcode); ctzw: QEMU 7.2 miscounts it (test_zb_differential)
    "clz": (0x600, 1, 0x13), "ctz": (0x601, 1, 0x13), "cpop": (0x602, 1, 0x13),
    "sext.b": (0x604, 1, 0x13), "sext.h": (0x605, 1, 0x13), "clzw": (0x600, 1, 0x1B),
    "cpopw": (0x602, 1, 0x1B), "orc.b": (0x287, 5, 0x13), "rev8": (0x6B8, 5, 0x13),
}
ZB_I = {  # name: (imm12 base, shamt bits, funct3, opcode)
    "slli.uw": (0x080, 6, 1, 0x1B), "rori": (0x600, 6, 5, 0x13), "roriw": (0x600, 5, 5, 0x1B),
    "bclri": (0x480, 6, 1, 0x13), "bexti": (0x480, 6, 5, 0x13), "binvi": (0x680, 6, 1, 0x13),
    "bseti": (0x280, 6, 1, 0x13),
}
FP_BIN = {"fadd": 0x00, "fsub": 0x04, "fmul": 0x08, "fdiv": 0x10}
SINGLES = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001,
           0x00000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x3F800000, 0xBF800000,
           0x4B800001, 0x4F000000, 0xCF000000]
DOUBLES = [0, 1 << 63, 0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000,
           0x7FF0000000000001, 1, 0x000FFFFFFFFFFFFF, 0x0010000000000000,
           0x7FEFFFFFFFFFFFFF, 0x3FF0000000000000, 0xBFF0000000000000, 0x4340000000000001,
           0x43E0000000000000, 0xC3E0000000000000, 0x41EFFFFFFFE00000]


def u_type(imm20: int, rd: int, opc: int) -> int:
    return ((imm20 & 0xFFFFF) << 12) | (rd << 7) | opc


def j_type(imm: int, rd: int) -> int:
    imm &= 0x1FFFFF
    return (((imm >> 20) & 1) << 31) | (((imm >> 1) & 0x3FF) << 21) \
        | (((imm >> 11) & 1) << 20) | (((imm >> 12) & 0xFF) << 12) | (rd << 7) | 0x6F


def csr(num: int, rs1: int, f3: int, rd: int) -> int:
    return (num << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | 0x73


def amo(f5: int, rd: int, rs1: int, rs2: int, width: int, aq: int = 0, rl: int = 0) -> int:
    return (f5 << 27) | (aq << 26) | (rl << 25) | (rs2 << 20) | (rs1 << 15) \
        | (width << 12) | (rd << 7) | 0x2F


def li32(rd: int, value: int) -> list[int]:
    """lui + addiw: any signed 32-bit ``value`` (sign-extended)."""
    lo = ((value & 0xFFF) ^ 0x800) - 0x800
    return [u_type((value - lo) >> 12, rd, 0x37), i_type(lo, rd, 0, rd, 0x1B)]


@dataclass
class Asm:
    code: bytearray = field(default_factory=bytearray)
    labels: dict[str, int] = field(default_factory=dict)
    fixups: list[tuple[int, str, str, tuple[int, ...]]] = field(default_factory=list)

    def here(self) -> int:
        return len(self.code)

    def w(self, *words: int) -> None:
        for word in words:
            self.code += word.to_bytes(4, "little")

    def h(self, half: int) -> None:
        self.code += half.to_bytes(2, "little")

    def put(self, items: list[tuple[int, int]]) -> None:
        for enc, length in items:
            self.code += enc.to_bytes(length, "little")

    def label(self, name: str) -> None:
        self.labels[name] = self.here()

    def ref(self, kind: str, name: str, *args: int) -> None:
        """A jump/branch/address to ``name``, patched by ``resolve``."""
        self.fixups.append((self.here(), kind, name, args))
        self.w(0, *([0] if kind == "la" else []))

    def branch_back(self, start: int, rs1: int, rs2: int, f3: int) -> None:
        self.w(b_type(start - self.here(), rs2, rs1, f3))

    def resolve(self) -> bytes:
        for at, kind, name, args in self.fixups:
            off = self.labels[name] - at
            if kind == "jal":
                words = [j_type(off, args[0])]
            elif kind == "b":
                words = [b_type(off, args[1], args[0], args[2])]
            else:                                            # la: auipc + addi
                lo = ((off & 0xFFF) ^ 0x800) - 0x800
                words = [u_type((off - lo) >> 12, args[0], 0x17),
                         i_type(lo, args[0], 0, args[0], 0x13)]
            for k, word in enumerate(words):
                self.code[at + 4 * k:at + 4 * k + 4] = word.to_bytes(4, "little")
        return bytes(self.code)


class LoopProgGen(Gen):
    """Random units for loop bodies; ``qemu``: nothing whose result QEMU's host
    time decides (counter reads), nor its ctzw."""

    def __init__(self, rng: random.Random, asm: Asm, qemu: bool, smode: bool) -> None:
        super().__init__(rng)
        self.a = asm
        self.qemu = qemu
        self.smode = smode
        self.pending = False           # a timer is armed and not yet waited for
        self.nfuncs = 0
        self.nlabels = 0

    def reg(self) -> int:
        return self.rng.choice(DESTS)

    def src(self) -> int:
        return self.rng.choice(SRCS)

    def compressed(self):
        while True:
            enc, length = super().compressed()
            if (enc >> 13) == 4 and (enc & 3) == 2 and ((enc >> 2) & 31) not in SRCS:
                continue                               # c.mv/c.add from a volatile register
            return enc, length

    def fresh(self, stem: str) -> str:
        self.nlabels += 1
        return f"{stem}{self.nlabels}"

    # -- units -------------------------------------------------------------------

    def basic(self) -> None:
        self.a.put(Gen.one(self))

    def fp(self) -> None:
        rng, a = self.rng, self.a
        fd, fs1, fs2, fs3 = (rng.randrange(32) for _ in range(4))
        dbl = rng.randrange(2)
        rm = rng.choice([0, 1, 2, 3, 4, 7, 7])
        k = rng.randrange(12)
        if k < 3:
            a.w(r_type(FP_BIN[rng.choice(list(FP_BIN))] | dbl, rm, 0x53, fd, fs1, fs2))
        elif k == 3:                                   # fsgnj/fsgnjn/fsgnjx, fmin/fmax
            f7, f3 = rng.choice([(0x10, 0), (0x10, 1), (0x10, 2), (0x14, 0), (0x14, 1)])
            a.w(r_type(f7 | dbl, f3, 0x53, fd, fs1, fs2))
        elif k == 4:                                   # fsqrt
            a.w(r_type(0x2C | dbl, rm, 0x53, fd, fs1, 0))
        elif k == 5:                                   # fmadd fmsub fnmsub fnmadd
            opc = rng.choice([0x43, 0x47, 0x4B, 0x4F])
            a.w((fs3 << 27) | (dbl << 25) | (fs2 << 20) | (fs1 << 15) | (rm << 12)
                | (fd << 7) | opc)
        elif k == 6:                                   # fcvt.{w,wu,l,lu}.{s,d}
            a.w(r_type(0x60 | dbl, rm, 0x53, self.reg(), fs1, rng.randrange(4)))
        elif k == 7:                                   # fcvt.{s,d}.{w,wu,l,lu}
            a.w(r_type(0x68 | dbl, rm, 0x53, fd, self.src(), rng.randrange(4)))
        elif k == 8:                                   # feq flt fle, fclass, fmv.x.{w,d}
            if rng.random() < 0.6:
                a.w(r_type(0x50 | dbl, rng.randrange(3), 0x53, self.reg(), fs1, fs2))
            else:
                a.w(r_type(0x70 | dbl, rng.randrange(2), 0x53, self.reg(), fs1, 0))
        elif k == 9:                                   # fmv.{w,d}.x, fcvt.s.d / fcvt.d.s
            if rng.random() < 0.5:
                a.w(r_type(0x78 | dbl, 0, 0x53, fd, self.src(), 0))
            else:
                a.w(r_type(0x20 | dbl, rm, 0x53, fd, fs1, 1 - dbl))
        else:                                          # flw fld fsw fsd (misaligned too)
            off = rng.randrange(0, 2040)
            if rng.random() < 0.8:
                off &= ~(3 | (dbl << 2))
            if k == 10:
                a.w(i_type(off, BASE, 2 + dbl, fd, 0x07))
            else:
                a.w(s_type(off, fs2, BASE, 2 + dbl, 0x27))

    def zb(self) -> None:
        rng, a = self.rng, self.a
        k = rng.random()
        if k < 0.55:
            f7, f3, opc = ZB_R[rng.choice(list(ZB_R))]
            a.w(r_type(f7, f3, opc, self.reg(), self.src(), self.src()))
        elif k < 0.8:
            imm, f3, opc = ZB_U[rng.choice(list(ZB_U))]
            a.w(i_type(imm, self.src(), f3, self.reg(), opc))
        elif k < 0.85:                                 # zext.h
            a.w(r_type(0x04, 4, 0x3B, self.reg(), self.src(), 0))
        else:
            base, bits, f3, opc = ZB_I[rng.choice(list(ZB_I))]
            a.w(i_type(base | rng.randrange(1 << bits), self.src(), f3, self.reg(), opc))

    def csr_op(self) -> None:
        rng, a = self.rng, self.a
        k = rng.randrange(5 if self.qemu else 6)
        if self.smode and rng.random() < 0.1:
            a.w(0x12000073)                                            # sfence.vma
            return
        if k == 0:
            a.w(csr(0x002, rng.randrange(5), 5, self.reg()))        # csrrwi rd, frm, rm
        elif k == 1:
            a.w(csr(0x001, rng.randrange(32), rng.choice([6, 7]), self.reg()))   # fflags
        elif k == 2:
            a.w(csr(0x003, 0, 2, self.reg()))                          # csrr fcsr
        elif k == 3:
            a.w(csr(0x140 if self.smode else 0x340, self.src(), rng.choice([1, 2, 3]),
                    self.reg()))                                       # sscratch / mscratch
        elif k == 4:
            a.w(csr(0x001, 0, 2, self.reg()))                          # frflags
        else:                                # cycle time instret (mcycle minstret)
            nums = [0xC00, 0xC01, 0xC02] + ([] if self.smode else [0xB00, 0xB02])
            a.w(csr(rng.choice(nums), 0, 2, self.reg()))

    def atomic(self) -> None:
        rng, a = self.rng, self.a
        width = rng.choice([2, 3])
        off = rng.randrange(0, 2040) & ~7
        if rng.random() < 0.08 and not self.qemu:                    # misaligned: see below
            off += rng.choice([1, 2, 4]) if width == 3 else rng.choice([1, 2])
        a.w(i_type(off, BASE, 0, ADDR, 0x13))                       # addi t3, t6, off
        aq, rl = rng.randrange(2), rng.randrange(2)
        if self.pending or rng.random() < 0.6:
            f5 = AMO_F5[rng.choice(list(AMO_F5))]
            a.w(amo(f5, self.reg(), ADDR, self.src(), width, aq, rl))
            return
        if rng.random() < 0.2:                                       # sc with no lr: fails
            a.w(amo(0x03, self.reg(), ADDR, self.src(), width, aq, rl))
            return
        a.w(amo(0x02, self.reg(), ADDR, 0, width, aq, rl))           # lr
        for _ in range(rng.randrange(3)):
            f7, f3, opc = R_OPS[rng.choice(["add", "xor", "sub", "mul"])]
            a.w(r_type(f7, f3, opc, self.reg(), self.src(), self.src()))
        a.w(amo(0x03, self.reg(), ADDR, self.src(), width, aq, rl))  # sc

    def code_slot(self) -> None:
        """A store into (and a load from) 8 bytes in the middle of the code."""
        a, rng = self.a, self.rng
        f3 = rng.randrange(4)
        a.w(u_type(0, ADDR, 0x17),                                   # auipc t3, 0
            s_type(16, self.src(), ADDR, f3),                        # s{b,h,w,d} rs, 16(t3)
            i_type(16, ADDR, rng.randrange(7), self.reg(), 0x03),   # l{b,h,w,d,bu,hu,wu}
            j_type(12, 0))                                           # j over the slot
        a.code += rng.randbytes(8)

    def trap(self) -> None:
        rng, a = self.rng, self.a
        k = rng.randrange(12 if self.smode else 9)
        if k >= 9:                                                     # Sv39 (see PT)
            if k == 9:
                a.w(u_type(0x40000, ADDR, 0x37))                       # not mapped
            elif k == 10:
                a.w(u_type(RO_ALIAS >> 13, ADDR, 0x37), i_type(1, ADDR, 1, ADDR, 0x13))
            else:
                a.w(i_type(1, 0, 0, ADDR, 0x13), i_type(39, ADDR, 1, ADDR, 0x13))  # 1 << 39
            off = rng.randrange(0, 2040) & ~7
            if rng.random() < 0.5:
                a.w(i_type(off, ADDR, rng.randrange(7), self.reg(), 0x03))
            else:
                a.w(s_type(off, self.src(), ADDR, rng.randrange(4)))
        elif k == 0:
            a.w(ECALL)
        elif k == 1:
            a.w(EBREAK)
        elif k == 2:
            a.w(0x0000000B | (self.reg() << 7))                        # custom-0
        elif k == 3:
            a.w(csr(rng.choice([0xC00, 0xC02, 0xF11]), self.src(), 1, self.reg()))  # RO csr
        elif k == 4:                                                   # reserved rm
            a.w(r_type(rng.randrange(2), rng.choice([5, 6]), 0x53, 1 + rng.randrange(31),
                       rng.randrange(32), rng.randrange(32)))
        else:                                                          # outside memory
            a.w(u_type(BAD >> 13, ADDR, 0x37), i_type(1, ADDR, 1, ADDR, 0x13))   # t3 = BAD
            off = rng.randrange(0, 2040) & ~7
            if k == 5:
                a.w(i_type(off, ADDR, rng.choice([0, 1, 2, 3, 4, 5, 6]), self.reg(), 0x03))
            elif k == 6:
                a.w(s_type(off, self.src(), ADDR, rng.randrange(4)))
            elif k == 7:
                a.w(i_type(off, ADDR, 3, rng.randrange(32), 0x07) if rng.random() < 0.5
                    else s_type(off, rng.randrange(32), ADDR, 2, 0x27))
            elif self.qemu:             # QEMU 7.2: a load access fault (5), see above
                a.w(i_type(off, ADDR, 3, self.reg(), 0x03))
            else:
                a.w(amo(AMO_F5[rng.choice(list(AMO_F5))], self.reg(), ADDR, self.src(),
                        rng.choice([2, 3])))

    def call(self) -> None:
        a = self.a
        name = f"func{self.rng.randrange(self.nfuncs)}"
        if self.rng.random() < 0.5:
            a.ref("jal", name, RA)
        else:
            a.ref("la", name, ADDR)
            a.w(i_type(0, ADDR, 0, RA, 0x67))                        # jalr ra, 0(t3)

    def arm_timer(self) -> None:
        """Sstc's stimecmp or the CLINT's mtimecmp = time + D (s10 is free: no trap
        can come before the timer is armed)."""
        a = self.a
        delay = i_type(self.rng.randrange(1, 400), ADDR, 0, ADDR, 0x13)
        a.w(i_type(1, 0, 0, PEND, 0x13))                             # li s9, 1
        if self.rng.random() < 0.5:
            a.w(csr(0xC01, 0, 2, ADDR), delay,                       # t3 = time + D
                csr(0x14D, ADDR, 1, 0))                              # csrw stimecmp, t3
        else:
            a.w(*li32(HSCR, CLINT_MTIME), i_type(0, HSCR, 3, ADDR, 0x03), delay,
                *li32(HSCR, CLINT_MTIMECMP), s_type(0, ADDR, HSCR, 3))
        self.pending = True

    def wait_timer(self) -> None:
        self.a.w(b_type(0, 0, PEND, 1))                              # bnez s9, .
        self.pending = False

    def chunk(self, n: int, traps: float) -> None:
        rng = self.rng
        for _ in range(n):
            k = rng.random()
            if k < 0.5:
                self.basic()
            elif k < 0.65:
                self.fp()
            elif k < 0.75:
                self.zb()
            elif k < 0.81:
                self.csr_op()
            elif k < 0.88:
                self.atomic()
            elif k < 0.9:
                self.code_slot()
            elif k < 0.9 + traps:
                self.trap()
            elif self.nfuncs and k < 0.96:
                self.call()
            else:
                self.basic()

    def loop(self, counter: int, trips: int, body) -> None:
        a = self.a
        a.w(i_type(trips, 0, 0, counter, 0x13))
        start = a.here()
        body()
        a.w(i_type(-1, counter, 0, counter, 0x13))
        if self.rng.random() < 0.5:
            a.branch_back(start, counter, 0, 1)                       # bnez
        else:
            a.branch_back(start, 0, counter, 4)                       # blt zero, cnt

    def inner_body(self) -> None:
        self.chunk(self.rng.randrange(4, 16), 0.005)

    def outer_body(self) -> None:
        rng = self.rng
        for _ in range(rng.randrange(1, 4)):
            k = rng.random()
            if k < 0.45:
                self.loop(INNER, rng.randrange(2, 24), self.inner_body)
            elif k < 0.6 and not self.pending:
                self.timer_unit(INNER)
            else:
                self.chunk(rng.randrange(3, 12), 0.03)

    def timer_unit(self, counter: int | None) -> None:
        self.arm_timer()
        if counter is not None and self.rng.random() < 0.6:
            self.loop(counter, self.rng.randrange(5, 40),
                      lambda: self.chunk(self.rng.randrange(3, 10), 0.0))
        else:
            self.chunk(self.rng.randrange(0, 30), 0.0)
        self.wait_timer()

    def function(self, k: int) -> None:
        a, rng = self.a, self.rng
        a.label(f"func{k}")
        saved, self.nfuncs = self.nfuncs, 0                          # leaves: no calls
        if rng.random() < 0.5:
            self.loop(FCNT, rng.randrange(2, 12), lambda: self.chunk(rng.randrange(3, 10), 0.005))
        self.chunk(rng.randrange(2, 10), 0.01)
        self.nfuncs = saved
        if rng.random() < 0.5:
            a.w(i_type(0, RA, 0, 0, 0x67))                          # ret
        else:
            a.h(0x8082)                                             # c.jr ra


def handler(a: Asm) -> None:
    """The trap handler (label ``handler``, 4-aligned): see the module doc."""
    if a.here() & 2:
        a.h(0x0001)                                                  # c.nop: mtvec is 4-aligned
    a.label("handler")
    a.w(csr(0x342, 0, 2, HSCR))                                      # csrr s10, mcause
    a.ref("b", "irq", HSCR, 0, 4)                                    # blt s10, zero, irq
    a.w(s_type(0, HSCR, LOGP, 3),
        csr(0x341, 0, 2, HSCR), s_type(8, HSCR, LOGP, 3),            # mepc
        csr(0x343, 0, 2, HSCR), s_type(16, HSCR, LOGP, 3),           # mtval
        i_type(24, LOGP, 0, LOGP, 0x13),
        csr(0x341, 0, 2, HSCR), i_type(4, HSCR, 0, HSCR, 0x13), csr(0x341, HSCR, 1, 0),
        MRET)
    a.label("irq")
    a.w(s_type(8, HSCR, IRQP, 3),                                    # mcause
        csr(0x341, 0, 2, HSCR), s_type(0, HSCR, IRQP, 3),            # mepc
        i_type(16, IRQP, 0, IRQP, 0x13),
        i_type(-1, 0, 0, HSCR, 0x13), csr(0x14D, HSCR, 1, 0),        # stimecmp = -1
        *li32(PEND, CLINT_MTIMECMP), s_type(0, HSCR, PEND, 3),       # mtimecmp = -1
        i_type(0, 0, 0, PEND, 0x13),                                 # s9 = 0
        MRET)


def _absolute(a: Asm, rd: int, addr: int) -> None:
    """rd = addr (an address of the image: pc-relative)."""
    off = addr - (CODE + a.here())
    lo = ((off & 0xFFF) ^ 0x800) - 0x800
    a.w(u_type((off - lo) >> 12, rd, 0x17), i_type(lo, rd, 0, rd, 0x13))


def _epilogue(a: Asm) -> None:
    _absolute(a, ADDR, DUMP)
    for i in range(1, 32):
        a.w(s_type(8 * i, 0 if i in VOLATILE else i, ADDR, 3))
    for i in range(32):
        a.w(s_type(256 + 8 * i, i, ADDR, 3, 0x27))                  # fsd
    a.w(csr(0x003, 0, 2, HSCR), s_type(512, HSCR, ADDR, 3))          # fcsr
    # print DUMP (520 bytes), the data page, then LOG up to s11
    a.w(*li32(HSCR, UART))                                           # s10 = UART
    for start, end in ((DUMP, DUMP + 520), (DATA, DATA + 4096)):
        _absolute(a, ADDR, start)
        _absolute(a, PEND, end)
        _print(a)
    _absolute(a, ADDR, LOG)
    a.w(i_type(0, LOGP, 0, PEND, 0x13))
    _print(a)
    a.w(u_type(TEST_DEV >> 12, ADDR, 0x37), *li32(PEND, 0x5555), s_type(0, PEND, ADDR, 2))
    a.w(j_type(0, 0))


def _print(a: Asm) -> None:
    """UART (s10) <- bytes [t3, s9)."""
    start = a.here()
    a.w(b_type(20, PEND, ADDR, 5),                                   # bge t3, s9, done
        i_type(0, ADDR, 4, INNER, 0x03), s_type(0, INNER, HSCR, 0),  # lbu; sb
        i_type(1, ADDR, 0, ADDR, 0x13))
    a.w(j_type(start - a.here(), 0))


@dataclass
class LoopProgram:
    image: bytes
    data: bytes
    xregs: list[int]
    fregs: list[int]


def _to_smode(a: Asm) -> None:
    """From M-mode to S-mode at the next instruction, with Sv39 on (``PT``), the
    counters and all memory (PMP) allowed; interrupts and traps still go to M."""
    a.w(i_type(-1, 0, 0, ADDR, 0x13), csr(0x3B0, ADDR, 1, 0),        # pmpaddr0 = -1
        i_type(0x1F, 0, 0, ADDR, 0x13), csr(0x3A0, ADDR, 1, 0),      # pmpcfg0: NAPOT RWX
        i_type(7, 0, 0, ADDR, 0x13), csr(0x306, ADDR, 1, 0),         # mcounteren
        i_type(8, 0, 0, ADDR, 0x13), i_type(60, ADDR, 1, ADDR, 0x13),
        *li32(HSCR, PT >> 12), r_type(0, 6, 0x33, ADDR, ADDR, HSCR),  # or
        csr(0x180, ADDR, 1, 0),                                      # satp
        *li32(ADDR, 0x1800), csr(0x300, ADDR, 3, 0),                 # mstatus.MPP = 0
        *li32(ADDR, 0x800), csr(0x300, ADDR, 2, 0))                  # ... = S
    a.ref("la", "smode", ADDR)
    a.w(csr(0x341, ADDR, 1, 0), MRET)
    a.label("smode")


def _page_table() -> bytes:
    pte = [0] * 512
    pte[0] = (0 << 10) | 0xC7                       # 0..1 GiB: devices, RW, A D
    pte[2] = ((CODE >> 12) << 10) | 0xCF            # 2..3 GiB: RAM, RWX, A D
    pte[3] = ((CODE >> 12) << 10) | 0x43            # 3..4 GiB: RAM again, read-only
    return b"".join(v.to_bytes(8, "little") for v in pte)


def make_loop_program(seed: int, qemu: bool = False, smode: bool | None = None) -> LoopProgram:
    """The program of ``seed``; ``qemu``: its output is the same on QEMU 7.2;
    ``smode``: it runs in S-mode under Sv39 (default: odd seeds)."""
    rng = random.Random(seed)
    a = Asm()
    if smode is None:
        smode = bool(seed & 1)
    gen = LoopProgGen(rng, a, qemu, smode)
    _absolute(a, BASE, DATA)
    _absolute(a, LOGP, LOG)
    _absolute(a, IRQP, IRQLOG)
    a.ref("la", "handler", ADDR)
    a.w(csr(0x305, ADDR, 1, 0))                                      # mtvec
    a.w(*li32(ADDR, 0x6000), csr(0x300, ADDR, 2, 0))                 # mstatus.FS dirty
    a.w(i_type(-1, 0, 0, ADDR, 0x13), i_type(63, ADDR, 1, ADDR, 0x13),
        csr(0x30A, ADDR, 2, 0))                                      # menvcfg.STCE
    a.w(i_type(-1, 0, 0, ADDR, 0x13), csr(0x14D, ADDR, 1, 0),        # stimecmp = -1
        *li32(HSCR, CLINT_MTIMECMP), s_type(0, ADDR, HSCR, 3))       # mtimecmp = -1
    a.w(i_type(0xA0, 0, 0, ADDR, 0x13), csr(0x304, ADDR, 1, 0))      # mie = MTIE | STIE
    a.w(csr(0x300, 8, 6, 0))                                         # csrsi mstatus, MIE
    _absolute(a, ADDR, INIT)
    for i in [*DESTS, RA]:
        a.w(i_type(8 * i, ADDR, 3, i, 0x03))
    for i in range(32):
        a.w(i_type(256 + 8 * i, ADDR, 3, i, 0x07))
    a.w(i_type(512, ADDR, 3, HSCR, 0x03), csr(0x003, HSCR, 1, 0))    # fcsr
    if smode:
        _to_smode(a)
    gen.nfuncs = rng.randrange(1, 4)
    for _ in range(rng.randrange(3, 7)):
        k = rng.random()
        if k < 0.6:
            gen.loop(OUTER, rng.randrange(33, 70), gen.outer_body)
        elif k < 0.75:
            gen.timer_unit(INNER)
        else:
            gen.loop(INNER, rng.randrange(33, 90), gen.inner_body)
    if gen.pending:
        gen.wait_timer()
    _epilogue(a)
    handler(a)
    for k in range(gen.nfuncs):
        gen.function(k)
    code = a.resolve()
    assert len(code) < CODE_MAX, len(code)

    data = rng.randbytes(4096)
    xregs = [0] * 32
    for i in [*DESTS, RA]:
        xregs[i] = rng.choice([0, 1, MASK, 1 << 63, 0xFFFF_FFFF, 0x8000_0000,
                               rng.randrange(1 << 64)])
    fregs = [rng.choice([0xFFFF_FFFF_0000_0000 | rng.choice(SINGLES), rng.choice(DOUBLES),
                         rng.randrange(1 << 64)]) for _ in range(32)]
    init = b"".join(v.to_bytes(8, "little") for v in xregs + fregs)
    init += rng.choice([0, 0, 1, 2, 3, 4, 0x1F, 0x20, 0x81]).to_bytes(8, "little")  # fcsr
    init += bytes(PT - INIT - len(init))
    image = code + bytes(DATA - CODE - len(code)) + data + init + _page_table()
    return LoopProgram(image, data, xregs, fregs)

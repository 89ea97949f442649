"""A RISC-V disassembler printing what QEMU 7.2's ``-d in_asm`` prints.

The text of each instruction is byte for byte what QEMU 7.2's ``disas/riscv.c``
prints (mnemonic padded to column 24, its operand order, the pseudo-instructions
it picks, CSR names, ``# 0x<target>`` after pc-relative offsets padded to column
48, ``illegal`` for what it cannot decode); :func:`format_in_asm` wraps a
translated block into the ``IN:`` record ``-d in_asm`` logs for it.

The decoding is table-driven: :data:`~vmforge.debug.disasm_tables.DECODE_TREE`
picks the op, :data:`CODECS` pulls out its operands,
:data:`~vmforge.debug.disasm_ops.OPS` gives the mnemonic, the format and the
expansion of compressed ops, :data:`~vmforge.debug.disasm_ops.PSEUDO` the
pseudo-instructions.

Covered: everything QEMU 7.2's disassembler knows: RV32/RV64/RV128 I, M, A, F,
D, Q, C, Zicsr, Zifencei, the privileged instructions, Zb*/Zk scalar and V.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from vmforge.debug.disasm_ops import OPS, PSEUDO
from vmforge.debug.disasm_tables import CSR_NAMES, DECODE_TREE

__all__ = ["DISAGREE", "Insn", "disassemble", "format_in_asm", "format_insn", "insn_length"]

IREG = ("zero ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 "
        "a6 a7 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6").split()
FREG = ("ft0 ft1 ft2 ft3 ft4 ft5 ft6 ft7 fs0 fs1 fa0 fa1 fa2 fa3 fa4 fa5 "
        "fa6 fa7 fs2 fs3 fs4 fs5 fs6 fs7 fs8 fs9 fs10 fs11 ft8 ft9 ft10 ft11").split()
ROUNDING = ("rne", "rtz", "rdn", "rup", "rmm", "inv", "inv", "dyn")
TAB = 24            # the mnemonic is padded to this column, a pc-relative offset to twice it


@dataclass(frozen=True)
class Insn:
    """One disassembled instruction."""

    address: int
    raw: int        #: the instruction bits (little-endian parcels assembled)
    length: int     #: 2, 4, 6 or 8 bytes (QEMU's length coding)
    text: str       #: what QEMU prints after the bits, e.g. ``addi    a0,a0,1``

    def line(self, xlen: int = 64) -> str:
        """The line QEMU's ``target_disas`` prints for it (without the newline);
        addresses have 8 hex digits on a 32-bit target, 16 otherwise."""
        digits = {2: 4, 4: 8, 6: 12}.get(self.length, 16)
        width = 8 if xlen == 32 else 16
        return (f"0x{self.address:0{width}x}:  {self.raw:0{digits}x}{' ' * (18 - digits)}"
                f"{self.text}")


def insn_length(low_parcel: int) -> int:
    """The length in bytes of the instruction whose first 16 bits are ``low_parcel``
    (2, 4, 6 or 8; 0 for the longer encodings, as QEMU's ``inst_length``)."""
    if low_parcel & 0b11 != 0b11:
        return 2
    if low_parcel & 0b11100 != 0b11100:
        return 4
    if low_parcel & 0b111111 == 0b011111:
        return 6
    if low_parcel & 0b1111111 == 0b0111111:
        return 8
    return 0


def _bits(insn: int, lo: int, width: int) -> int:
    return (insn >> lo) & ((1 << width) - 1)


def _sbits(insn: int, lo: int, width: int) -> int:
    value = _bits(insn, lo, width)
    return value - (1 << width) if value >> (width - 1) else value


def _pick(insn: int, *spec: tuple[int, int, int]) -> int:
    """OR together ``bits(lo, width) << dest`` for each ``(lo, width, dest)``."""
    return sum(_bits(insn, lo, w) << dest for lo, w, dest in spec)


def _spick(insn: int, sign_bit: int, sign_dest: int, *spec: tuple[int, int, int]) -> int:
    """As :func:`_pick`, with bit ``sign_bit`` extended from ``sign_dest`` upwards."""
    return _pick(insn, *spec) - (_bits(insn, sign_bit, 1) << sign_dest)


def _rd(i: int) -> int:
    return _bits(i, 7, 5)


def _rs1(i: int) -> int:
    return _bits(i, 15, 5)


def _rs2(i: int) -> int:
    return _bits(i, 20, 5)


def _crs2(i: int) -> int:
    return _bits(i, 2, 5)


def _q7(i: int) -> int:          # rd' / rs2' (bits 4:2) as x8-x15
    return _bits(i, 2, 3) + 8


def _q9(i: int) -> int:          # rs1' / rd' (bits 9:7) as x8-x15
    return _bits(i, 7, 3) + 8


def _cimmi(i: int) -> int:
    return _spick(i, 12, 5, (2, 5, 0))


def _cshamt(i: int) -> int:
    return _pick(i, (12, 1, 5), (2, 5, 0))


def _cimmw(i: int) -> int:
    return _pick(i, (10, 3, 3), (6, 1, 2), (5, 1, 6))


def _cimmd(i: int) -> int:
    return _pick(i, (10, 3, 3), (5, 2, 6))


def _cimmq(i: int) -> int:
    return _pick(i, (11, 2, 4), (10, 1, 8), (5, 2, 6))


def _cimmj(i: int) -> int:
    return _spick(i, 12, 11, (11, 1, 4), (9, 2, 8), (8, 1, 10), (7, 1, 6), (6, 1, 7),
                  (3, 3, 1), (2, 1, 5))


def _cimmb(i: int) -> int:
    return _spick(i, 12, 8, (10, 2, 3), (5, 2, 6), (3, 2, 1), (2, 1, 5))


def _cshamt_xlen(i: int, xlen: int, right: bool) -> int:
    imm = _cshamt(i)
    if xlen == 128:
        if right:
            imm |= (imm & 32) << 1
        imm = imm or 64
    return imm


# codec -> (insn, xlen) -> (rd, rs1, rs2, imm, extra); ``extra`` holds what a few
# formats need besides: rs3/rm (F), aq/rl (A), pred/succ (fence), bs/rnum (Zk)
Operands = tuple[int, int, int, int, dict[str, int]]
_NONE: dict[str, int] = {}
SP, RA = 2, 1

CODECS: dict[str, Callable[[int, int], Operands]] = {
    "illegal": lambda i, x: (0, 0, 0, 0, _NONE),
    "none": lambda i, x: (0, 0, 0, 0, _NONE),
    "u": lambda i, x: (_rd(i), 0, 0, _sbits(i, 12, 20) << 12, _NONE),
    "uj": lambda i, x: (_rd(i), 0, 0, _spick(i, 31, 20, (21, 10, 1), (20, 1, 11),
                                             (12, 8, 12)), _NONE),
    "i": lambda i, x: (_rd(i), _rs1(i), 0, _sbits(i, 20, 12), _NONE),
    "i_sh5": lambda i, x: (_rd(i), _rs1(i), 0, _bits(i, 20, 5), _NONE),
    "i_sh6": lambda i, x: (_rd(i), _rs1(i), 0, _bits(i, 20, 6), _NONE),
    "i_sh7": lambda i, x: (_rd(i), _rs1(i), 0, _bits(i, 20, 7), _NONE),
    "i_csr": lambda i, x: (_rd(i), _rs1(i), 0, _bits(i, 20, 12), _NONE),
    "s": lambda i, x: (0, _rs1(i), _rs2(i), _spick(i, 31, 11, (25, 6, 5), (7, 5, 0)), _NONE),
    "sb": lambda i, x: (0, _rs1(i), _rs2(i),
                        _spick(i, 31, 12, (25, 6, 5), (8, 4, 1), (7, 1, 11)), _NONE),
    "r": lambda i, x: (_rd(i), _rs1(i), _rs2(i), 0, _NONE),
    "r_m": lambda i, x: (_rd(i), _rs1(i), _rs2(i), 0, {"rm": _bits(i, 12, 3)}),
    "r4_m": lambda i, x: (_rd(i), _rs1(i), _rs2(i), 0,
                          {"rm": _bits(i, 12, 3), "rs3": _bits(i, 27, 5)}),
    "r_a": lambda i, x: (_rd(i), _rs1(i), _rs2(i), 0,
                         {"aq": _bits(i, 26, 1), "rl": _bits(i, 25, 1)}),
    "r_l": lambda i, x: (_rd(i), _rs1(i), 0, 0, {"aq": _bits(i, 26, 1), "rl": _bits(i, 25, 1)}),
    "r_f": lambda i, x: (0, 0, 0, 0, {"pred": _bits(i, 24, 4), "succ": _bits(i, 20, 4)}),
    "cb": lambda i, x: (0, _q9(i), 0, _cimmb(i), _NONE),
    "cb_imm": lambda i, x: (_q9(i), _q9(i), 0, _cimmi(i), _NONE),
    "cb_sh5": lambda i, x: (_q9(i), _q9(i), 0, _crs2(i), _NONE),
    "cb_sh6": lambda i, x: (_q9(i), _q9(i), 0, _cshamt_xlen(i, x, True), _NONE),
    "ci": lambda i, x: (_rd(i), _rd(i), 0, _cimmi(i), _NONE),
    "ci_sh5": lambda i, x: (_rd(i), _rd(i), 0, _crs2(i), _NONE),
    "ci_sh6": lambda i, x: (_rd(i), _rd(i), 0, _cshamt_xlen(i, x, False), _NONE),
    "ci_16sp": lambda i, x: (SP, SP, 0, _spick(i, 12, 9, (6, 1, 4), (5, 1, 6), (3, 2, 7),
                                               (2, 1, 5)), _NONE),
    "ci_lwsp": lambda i, x: (_rd(i), SP, 0, _pick(i, (12, 1, 5), (4, 3, 2), (2, 2, 6)), _NONE),
    "ci_ldsp": lambda i, x: (_rd(i), SP, 0, _pick(i, (12, 1, 5), (5, 2, 3), (2, 3, 6)), _NONE),
    "ci_lqsp": lambda i, x: (_rd(i), SP, 0, _pick(i, (12, 1, 5), (6, 1, 4), (2, 4, 6)), _NONE),
    "ci_li": lambda i, x: (_rd(i), 0, 0, _cimmi(i), _NONE),
    "ci_lui": lambda i, x: (_rd(i), 0, 0, _spick(i, 12, 17, (2, 5, 12)), _NONE),
    "ci_none": lambda i, x: (0, 0, 0, 0, _NONE),
    "ciw_4spn": lambda i, x: (_q7(i), SP, 0, _pick(i, (11, 2, 4), (7, 4, 6), (6, 1, 2),
                                                   (5, 1, 3)), _NONE),
    "cj": lambda i, x: (0, 0, 0, _cimmj(i), _NONE),
    "cj_jal": lambda i, x: (RA, 0, 0, _cimmj(i), _NONE),
    "cl_lw": lambda i, x: (_q7(i), _q9(i), 0, _cimmw(i), _NONE),
    "cl_ld": lambda i, x: (_q7(i), _q9(i), 0, _cimmd(i), _NONE),
    "cl_lq": lambda i, x: (_q7(i), _q9(i), 0, _cimmq(i), _NONE),
    "cr": lambda i, x: (_rd(i), _rd(i), _crs2(i), 0, _NONE),
    "cr_mv": lambda i, x: (_rd(i), _crs2(i), 0, 0, _NONE),
    "cr_jalr": lambda i, x: (RA, _rd(i), 0, 0, _NONE),
    "cr_jr": lambda i, x: (0, _rd(i), 0, 0, _NONE),
    "cs": lambda i, x: (_q9(i), _q9(i), _q7(i), 0, _NONE),
    "cs_sw": lambda i, x: (0, _q9(i), _q7(i), _cimmw(i), _NONE),
    "cs_sd": lambda i, x: (0, _q9(i), _q7(i), _cimmd(i), _NONE),
    "cs_sq": lambda i, x: (0, _q9(i), _q7(i), _cimmq(i), _NONE),
    "css_swsp": lambda i, x: (0, SP, _crs2(i), _pick(i, (9, 4, 2), (7, 2, 6)), _NONE),
    "css_sdsp": lambda i, x: (0, SP, _crs2(i), _pick(i, (10, 3, 3), (7, 3, 6)), _NONE),
    "css_sqsp": lambda i, x: (0, SP, _crs2(i), _pick(i, (11, 2, 4), (7, 4, 6)), _NONE),
    # QEMU leaves rd and imm at 0 for these
    "k_bs": lambda i, x: (0, _rs1(i), _rs2(i), 0, {"bs": _bits(i, 30, 2)}),
    "k_rnum": lambda i, x: (_rd(i), _rs1(i), 0, 0, {"rnum": _bits(i, 20, 4)}),
    "v_r": lambda i, x: (_rd(i), _rs1(i), _rs2(i), 0, {"vm": _bits(i, 25, 1)}),
    "v_ldst": lambda i, x: (_rd(i), _rs1(i), 0, 0, {"vm": _bits(i, 25, 1)}),
    "v_i": lambda i, x: (_rd(i), 0, _rs2(i), _sbits(i, 15, 5), {"vm": _bits(i, 25, 1)}),
    "vsetvli": lambda i, x: (_rd(i), _rs1(i), 0, 0, {"vzimm": _bits(i, 20, 11)}),
    "vsetivli": lambda i, x: (_rd(i), 0, 0, _sbits(i, 15, 5), {"vzimm": _bits(i, 20, 10)}),
}

_CONSTRAINTS: dict[str, Callable[[int, int, int, int], bool]] = {
    "rd=0": lambda rd, rs1, rs2, imm: rd == 0,
    "rd=ra": lambda rd, rs1, rs2, imm: rd == RA,
    "rs1=0": lambda rd, rs1, rs2, imm: rs1 == 0,
    "rs1=ra": lambda rd, rs1, rs2, imm: rs1 == RA,
    "rs2=0": lambda rd, rs1, rs2, imm: rs2 == 0,
    "rs2=rs1": lambda rd, rs1, rs2, imm: rs2 == rs1,
}


def _holds(constraint: str, rd: int, rs1: int, rs2: int, imm: int) -> bool:
    check = _CONSTRAINTS.get(constraint)
    if check is not None:
        return check(rd, rs1, rs2, imm)
    return imm == int(constraint.removeprefix("imm="))


def _decode_op(node: Any, insn: int, xlen: int) -> str:
    """Walk a node of :data:`DECODE_TREE` down to the op name (``"illegal"`` if none)."""
    while True:
        if node is None:
            return "illegal"
        if isinstance(node, str):
            return node
        if isinstance(node, dict):
            node = node[xlen]
        elif isinstance(node, list):        # later matches override earlier ones
            found = "illegal"
            for alternative in node:
                op = _decode_op(alternative, insn, xlen)
                if op != "illegal":
                    found = op
            return found
        else:
            fields, cases, default = node
            value = 0
            for shift, mask in fields:
                value |= (insn >> shift) & mask
            node = cases.get(value, default)


def _vtype(vzimm: int) -> str:
    """``e<sew>,m<lmul>,t?,m?`` as QEMU prints a vtype (a reserved fractional LMUL
    repeats the SEW there, as QEMU's reused buffer does)."""
    sew = str(1 << (((vzimm >> 3) & 0b111) + 3))
    lmul = vzimm & 0b11
    if (vzimm >> 2) & 1:
        mul = {3: "f2", 2: "f4", 1: "f8"}.get(lmul, sew)
    else:
        mul = str(1 << lmul)
    tail = "ta" if (vzimm >> 6) & 1 else "tu"
    mask = "ma" if (vzimm >> 7) & 1 else "mu"
    return f"e{sew},m{mul},{tail},{mask}"


def _fence_set(bits: int) -> str:
    return "".join(c for c, b in zip("iorw", (8, 4, 2, 1), strict=True) if bits & b)


def format_insn(insn: int, pc: int, xlen: int = 64) -> str:
    """The text QEMU 7.2 prints for the instruction bits ``insn`` at ``pc``."""
    if xlen not in (32, 64, 128):
        raise ValueError(f"xlen must be 32, 64 or 128, not {xlen}")
    text, offset = _render(insn, xlen)
    if offset is None:
        return text
    return f"{text}# 0x{(pc + offset) & 0xFFFF_FFFF_FFFF_FFFF:x}"


@lru_cache(maxsize=1 << 16)
def _render(insn: int, xlen: int) -> tuple[str, int | None]:
    """The text of ``insn`` but the ``# 0x<target>`` a pc-relative offset ends with
    (``o`` is last in every format), and that offset (``None``: there is none).
    Code repeats itself, so the pc-free part is cached."""
    op = _decode_op(DECODE_TREE, insn, xlen)
    entry = OPS[op]
    rd, rs1, rs2, imm, extra = CODECS[entry[1]](insn, xlen)
    if len(entry) > 3:                                  # a compressed op expands
        expanded = entry[3 + (32, 64, 128).index(xlen) + 1]
        if expanded is not None:
            op = "illegal" if len(entry) > 7 and imm == 0 else expanded
    for pseudo, constraints in PSEUDO.get(op, ()):
        if all(_holds(c, rd, rs1, rs2, imm) for c in constraints):
            op = pseudo
            break
    name, fmt = OPS[op][0], OPS[op][2]
    out: list[str] = []
    length = 0
    for ch in fmt:
        if ch == "\t":
            piece = " " * max(0, TAB - length)
        elif ch == "o":
            piece = str(imm)
            out.append(piece + " " * max(0, 2 * TAB - length - len(piece)))
            return "".join(out), imm
        else:
            field = FIELDS.get(ch)         # QEMU skips a letter it does not know
            piece = field(name, rd, rs1, rs2, imm, extra) if field else ""
        out.append(piece)
        length += len(piece)
    return "".join(out), None


FIELDS: dict[str, Callable[[str, int, int, int, int, dict[str, int]], str]] = {
    "O": lambda n, rd, rs1, rs2, imm, e: n,
    "(": lambda n, rd, rs1, rs2, imm, e: "(",
    ",": lambda n, rd, rs1, rs2, imm, e: ",",
    ")": lambda n, rd, rs1, rs2, imm, e: ")",
    "0": lambda n, rd, rs1, rs2, imm, e: IREG[rd],
    "1": lambda n, rd, rs1, rs2, imm, e: IREG[rs1],
    "2": lambda n, rd, rs1, rs2, imm, e: IREG[rs2],
    "3": lambda n, rd, rs1, rs2, imm, e: FREG[rd],
    "4": lambda n, rd, rs1, rs2, imm, e: FREG[rs1],
    "5": lambda n, rd, rs1, rs2, imm, e: FREG[rs2],
    "6": lambda n, rd, rs1, rs2, imm, e: FREG[e.get("rs3", 0)],
    "7": lambda n, rd, rs1, rs2, imm, e: str(rs1),
    "i": lambda n, rd, rs1, rs2, imm, e: str(imm),
    "b": lambda n, rd, rs1, rs2, imm, e: str(e.get("bs", 0)),
    "n": lambda n, rd, rs1, rs2, imm, e: str(e.get("rnum", 0)),
    "c": lambda n, rd, rs1, rs2, imm, e: CSR_NAMES.get(imm & 0xFFF, f"0x{imm & 0xFFF:03x}"),
    "r": lambda n, rd, rs1, rs2, imm, e: ROUNDING[e.get("rm", 0)],
    "p": lambda n, rd, rs1, rs2, imm, e: _fence_set(e.get("pred", 0)),
    "s": lambda n, rd, rs1, rs2, imm, e: _fence_set(e.get("succ", 0)),
    "A": lambda n, rd, rs1, rs2, imm, e: ".aq" if e.get("aq") else "",
    "R": lambda n, rd, rs1, rs2, imm, e: ".rl" if e.get("rl") else "",
    "D": lambda n, rd, rs1, rs2, imm, e: f"v{rd}",
    "E": lambda n, rd, rs1, rs2, imm, e: f"v{rs1}",
    "F": lambda n, rd, rs1, rs2, imm, e: f"v{rs2}",
    "u": lambda n, rd, rs1, rs2, imm, e: str(imm & 0b11111),
    "l": lambda n, rd, rs1, rs2, imm, e: ",v0",
    "m": lambda n, rd, rs1, rs2, imm, e: "" if e.get("vm") else ",v0.t",
    "v": lambda n, rd, rs1, rs2, imm, e: _vtype(e.get("vzimm", 0)),
}


def disassemble(code: bytes, pc: int, *, xlen: int = 64) -> list[Insn]:
    """Disassemble ``code`` (guest bytes, little-endian) placed at address ``pc``.

    Instructions follow each other as QEMU's ``target_disas`` walks them; a last
    instruction cut short by the end of ``code`` is decoded from the parcels
    present (QEMU reads on into guest memory there).
    """
    out: list[Insn] = []
    offset = 0
    while offset + 2 <= len(code):
        insn = int.from_bytes(code[offset:offset + 2], "little")
        length = insn_length(insn)
        for n in range(2, length, 2):
            if offset + n + 2 > len(code):
                break
            insn |= int.from_bytes(code[offset + n:offset + n + 2], "little") << (8 * n)
        address = (pc + offset) & ((1 << min(xlen, 64)) - 1)
        out.append(Insn(address, insn, length, format_insn(insn, address, xlen)))
        if length == 0:             # QEMU would loop forever there; stop instead
            break
        offset += length
    return out


#: what QEMU's ``target_disas`` prints when an instruction runs past the block
DISAGREE = ("Disassembler disagrees with translator over instruction decoding\n"
            "Please report this to qemu-devel@nongnu.org")


def format_in_asm(block_pc: int, code: bytes, symbol: str | None = None, *,
                  size: int | None = None, priv: int | None = 3, virt: int = 0,
                  xlen: int = 64) -> str:
    """The record QEMU 7.2's ``-d in_asm`` logs when it translates a block.

    ``code`` holds the block's bytes from ``block_pc``; ``size`` is the block's
    length (``tb->size``, default ``len(code)``).  ``code`` may run past ``size``:
    QEMU's translator takes a 48- or 64-bit encoding as a 4-byte illegal
    instruction while its disassembler reads all of it, and then adds a two-line
    complaint (:data:`DISAGREE`).  ``symbol`` is what ``lookup_symbol`` found for
    ``block_pc`` (``None``: nothing), ``priv``/``virt`` the hart's privilege
    level and virtualisation mode at translation (system emulation prints them;
    ``priv=None`` for user-mode emulation, which does not).

    The hart calls it once per block it translates, when ``in_asm`` logging is on
    and ``block_pc`` is inside the ``-dfilter`` ranges, and writes the text as is.
    """
    remaining = len(code) if size is None else size
    lines = ["----------------", f"IN: {symbol or ''}"]
    if priv is not None:
        lines.append(f"Priv: {priv}; Virt: {virt}")
    for insn in disassemble(code, block_pc, xlen=xlen):
        if remaining <= 0:
            break
        lines.append(insn.line(xlen))
        if remaining < insn.length:
            lines.append(DISAGREE)
            break
        remaining -= insn.length
    return "\n".join(lines) + "\n\n"

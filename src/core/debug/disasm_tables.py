"""The decode tree and the CSR names of QEMU 7.2's RISC-V disassembler, as data.

A node is ``(fields, cases, default)``: the bits ``OR(((insn >> shift) & mask) for
shift, mask in fields)`` select a child in ``cases`` (else ``default``).  A child is
an op name (a key of :data:`vmforge.debug.disasm_ops.OPS`), ``None`` (illegal),
another node, a ``{xlen: op}`` dict (the op depends on the base width), or a list
of nodes tried in turn where a later match overrides an earlier one (QEMU's
OP-major decode runs two switches one after the other).  The shapes follow
``decode_inst_opcode`` in QEMU's ``disas/riscv.c`` so that every encoding,
reserved ones included, decodes to what QEMU prints; the vector subtrees are in
:mod:`vmforge.debug.disasm_vector`.
"""

from __future__ import annotations

from typing import Any

from vmforge.debug.disasm_vector import OP_V, VECTOR_LOADS, VECTOR_STORES

__all__ = ["CSR_NAMES", "DECODE_TREE"]

Node = tuple[tuple[tuple[int, int], ...], dict[int, Any], Any]


def _sw(fields: tuple[tuple[int, int], ...], cases: dict[int, Any], default: Any = None) -> Node:
    return (fields, cases, default)


F3 = ((12, 0b111),)
RS2 = ((20, 0b11111),)
F7F3 = ((22, 0b1111111000), (12, 0b111))          # funct7 << 3 | funct3
F5F3 = ((24, 0b11111000), (12, 0b111))            # AMO: funct5 << 3 | funct3
FP_RS2F3 = ((17, 0b11111000), (12, 0b111))        # fmv/fclass: rs2 << 3 | funct3


def _only(field: tuple[tuple[int, int], ...], value: int, op: str) -> Node:
    return _sw(field, {value: op})


_Q0 = _sw(((13, 0b111),), {
    0: "c_addi4spn",
    1: {32: "c_fld", 64: "c_fld", 128: "c_lq"},
    2: "c_lw",
    3: {32: "c_flw", 64: "c_ld", 128: "c_ld"},
    5: {32: "c_fsd", 64: "c_fsd", 128: "c_sq"},
    6: "c_sw",
    7: {32: "c_fsw", 64: "c_sd", 128: "c_sd"},
})

_Q1 = _sw(((13, 0b111),), {
    0: _sw(((2, 0b11111111111),), {0: "c_nop"}, "c_addi"),
    1: {32: "c_jal", 64: "c_addiw", 128: "c_addiw"},
    2: "c_li",
    3: _sw(((7, 0b11111),), {2: "c_addi16sp"}, "c_lui"),
    4: _sw(((10, 0b11),), {
        0: "c_srli", 1: "c_srai", 2: "c_andi",
        3: _sw(((10, 0b100), (5, 0b011)), {
            0: "c_sub", 1: "c_xor", 2: "c_or", 3: "c_and", 4: "c_subw", 5: "c_addw"}),
    }),
    5: "c_j",
    6: "c_beqz",
    7: "c_bnez",
})

_Q2 = _sw(((13, 0b111),), {
    0: "c_slli",
    1: {32: "c_fldsp", 64: "c_fldsp", 128: "c_lqsp"},
    2: "c_lwsp",
    3: {32: "c_flwsp", 64: "c_ldsp", 128: "c_ldsp"},
    4: _sw(((12, 0b1),), {
        0: _sw(((2, 0b11111),), {0: "c_jr"}, "c_mv"),
        1: _sw(((2, 0b11111),), {0: _sw(((7, 0b11111),), {0: "c_ebreak"}, "c_jalr")},
               "c_add"),
    }),
    5: {32: "c_fsdsp", 64: "c_fsdsp", 128: "c_sqsp"},
    6: "c_swsp",
    7: {32: "c_fswsp", 64: "c_sdsp", 128: "c_sdsp"},
})

_LOAD = _sw(F3, {0: "lb", 1: "lh", 2: "lw", 3: "ld", 4: "lbu", 5: "lhu", 6: "lwu", 7: "ldu"})

_OP_IMM_HI7 = ((20, 0b1111111),)
_OP_IMM = _sw(F3, {
    0: "addi",
    1: _sw(((27, 0b11111),), {
        0b00000: "slli",
        0b00001: _only(_OP_IMM_HI7, 0b0001111, "zip"),
        0b00010: _sw(_OP_IMM_HI7, {
            0: "sha256sum0", 1: "sha256sum1", 2: "sha256sig0", 3: "sha256sig1",
            4: "sha512sum0", 5: "sha512sum1", 6: "sha512sig0", 7: "sha512sig1",
            8: "sm3p0", 9: "sm3p1"}),
        0b00101: "bseti",
        0b00110: _sw(_OP_IMM_HI7, {0: "aes64im"}, _only(((24, 0b0111),), 1, "aes64ks1i")),
        0b01001: "bclri",
        0b01101: "binvi",
        0b01100: _sw(_OP_IMM_HI7, {0: "clz", 1: "ctz", 2: "cpop", 4: "sext_b", 5: "sext_h"}),
    }),
    2: "slti",
    3: "sltiu",
    4: "xori",
    5: _sw(((27, 0b11111),), {
        0b00000: "srli",
        0b00001: _only(_OP_IMM_HI7, 0b0001111, "unzip"),
        0b00101: "orc_b",
        0b01000: "srai",
        0b01001: "bexti",
        0b01100: "rori",
        0b01101: _sw(_OP_IMM_HI7, {0b0011000: "rev8", 0b0111000: "rev8", 0b0000111: "brev8"}),
    }),
    6: "ori",
    7: "andi",
})

_F7 = ((25, 0b1111111),)
_OP_IMM_32 = _sw(F3, {
    0: "addiw",
    1: _sw(_F7, {0: "slliw", 4: "slli_uw",
                 48: _sw(RS2, {0: "clzw", 1: "ctzw", 2: "cpopw"})}),
    5: _sw(_F7, {0: "srliw", 32: "sraiw", 48: "roriw"}),
})

_STORE = _sw(F3, {0: "sb", 1: "sh", 2: "sw", 3: "sd", 4: "sq"})
_LOAD_FP = _sw(F3, {2: "flw", 3: "fld", 4: "flq", **VECTOR_LOADS})
_STORE_FP = _sw(F3, {2: "fsw", 3: "fsd", 4: "fsq", **VECTOR_STORES})

_AMO_NAMES = {0: "amoadd", 1: "amoswap", 4: "amoxor", 8: "amoor", 12: "amoand",
              16: "amomin", 20: "amomax", 24: "amominu", 28: "amomaxu", 3: "sc"}
_AMO_CASES: dict[int, Any] = {}
for _f5, _name in _AMO_NAMES.items():
    for _f3, _suffix in ((2, "w"), (3, "d"), (4, "q")):
        _AMO_CASES[_f5 << 3 | _f3] = f"{_name}_{_suffix}"
for _f3, _suffix in ((2, "w"), (3, "d"), (4, "q")):
    _AMO_CASES[2 << 3 | _f3] = _only(RS2, 0, f"lr_{_suffix}")
_AMO = _sw(F5F3, _AMO_CASES)

_OP = [
    _sw(F7F3, {
        0: "add", 1: "sll", 2: "slt", 3: "sltu", 4: "xor", 5: "srl", 6: "or", 7: "and",
        8: "mul", 9: "mulh", 10: "mulhsu", 11: "mulhu", 12: "div", 13: "divu", 14: "rem",
        15: "remu", 36: _sw(RS2, {0: "zext_h"}, "pack"), 39: "packh", 41: "clmul",
        42: "clmulr", 43: "clmulh", 44: "min", 45: "minu", 46: "max", 47: "maxu",
        130: "sh1add", 132: "sh2add", 134: "sh3add", 161: "bset", 162: "xperm4",
        164: "xperm8", 200: "aes64es", 216: "aes64esm", 232: "aes64ds", 248: "aes64dsm",
        256: "sub", 260: "xnor", 261: "sra", 262: "orn", 263: "andn", 289: "bclr",
        293: "bext", 320: "sha512sum0r", 328: "sha512sum1r", 336: "sha512sig0l",
        344: "sha512sig1l", 368: "sha512sig0h", 376: "sha512sig1h", 385: "rol", 389: "ror",
        417: "binv", 504: "aes64ks2"}),
    _sw(((25, 0b0011111),), {17: "aes32esi", 19: "aes32esmi", 21: "aes32dsi",
                             23: "aes32dsmi", 24: "sm4ed", 26: "sm4ks"}),
]

_OP_32 = _sw(F7F3, {
    0: "addw", 1: "sllw", 5: "srlw", 8: "mulw", 12: "divw", 13: "divuw", 14: "remw",
    15: "remuw", 32: "add_uw", 36: _sw(RS2, {0: "zext_h"}, "packw"), 130: "sh1add_uw",
    132: "sh2add_uw", 134: "sh3add_uw", 256: "subw", 261: "sraw", 385: "rolw", 389: "rorw"})


def _fused(name: str) -> Node:
    return _sw(((25, 0b11),), {0: f"{name}_s", 1: f"{name}_d", 3: f"{name}_q"})


def _by_width(base: int, sub: Any) -> dict[int, Any]:
    """funct7 = base + 0/1/3 for .s/.d/.q, each child made by ``sub(suffix)``."""
    return {base + off: sub(sfx) for off, sfx in ((0, "s"), (1, "d"), (3, "q"))}


def _f3ops(*names: str) -> Any:
    return lambda s: _sw(F3, {i: f"{n}_{s}" for i, n in enumerate(names)})


_OP_FP_CASES: dict[int, Any] = {}
for _base, _name in ((0, "fadd"), (4, "fsub"), (8, "fmul"), (12, "fdiv")):
    _OP_FP_CASES.update(_by_width(_base, lambda s, n=_name: f"{n}_{s}"))
_OP_FP_CASES.update(_by_width(16, _f3ops("fsgnj", "fsgnjn", "fsgnjx")))
_OP_FP_CASES.update(_by_width(20, _f3ops("fmin", "fmax")))
_OP_FP_CASES.update({
    32: _sw(RS2, {1: "fcvt_s_d", 3: "fcvt_s_q"}),
    33: _sw(RS2, {0: "fcvt_d_s", 3: "fcvt_d_q"}),
    35: _sw(RS2, {0: "fcvt_q_s", 1: "fcvt_q_d"}),
})
_OP_FP_CASES.update(_by_width(44, lambda s: _only(RS2, 0, f"fsqrt_{s}")))
_OP_FP_CASES.update(_by_width(80, _f3ops("fle", "flt", "feq")))
_OP_FP_CASES.update(_by_width(96, lambda s: _sw(RS2, {
    0: f"fcvt_w_{s}", 1: f"fcvt_wu_{s}", 2: f"fcvt_l_{s}", 3: f"fcvt_lu_{s}"})))
_OP_FP_CASES.update(_by_width(104, lambda s: _sw(RS2, {
    0: f"fcvt_{s}_w", 1: f"fcvt_{s}_wu", 2: f"fcvt_{s}_l", 3: f"fcvt_{s}_lu"})))
_OP_FP_CASES.update(_by_width(112, lambda s: _sw(FP_RS2F3, {0: f"fmv_x_{s}", 1: f"fclass_{s}"})))
_OP_FP_CASES.update(_by_width(120, lambda s: _only(FP_RS2F3, 0, f"fmv_{s}_x")))
_OP_FP = _sw(_F7, _OP_FP_CASES)

_OP_IMM_64 = _sw(F3, {0: "addid", 1: _only(((26, 0b111111),), 0, "sllid"),
                      5: _sw(((26, 0b111111),), {0: "srlid", 16: "sraid"})})
_BRANCH = _sw(F3, {0: "beq", 1: "bne", 4: "blt", 5: "bge", 6: "bltu", 7: "bgeu"})

_RS1RS2 = ((15, 0b1111111111),)
_SYSTEM = _sw(F3, {
    0: _sw(((20, 0b111111100000), (7, 0b000000011111)), {
        0: _sw(_RS1RS2, {0: "ecall", 32: "ebreak", 64: "uret"}),
        256: _sw(RS2, {2: _only(((15, 0b11111),), 0, "sret"), 4: "sfence_vm",
                       5: _only(((15, 0b11111),), 0, "wfi")}),
        288: "sfence_vma",
        512: _only(_RS1RS2, 64, "hret"),
        768: _only(_RS1RS2, 64, "mret"),
        1952: _only(_RS1RS2, 576, "dret"),
    }),
    1: "csrrw", 2: "csrrs", 3: "csrrc", 5: "csrrwi", 6: "csrrsi", 7: "csrrci",
})

_OP_64 = _sw(F7F3, {0: "addd", 1: "slld", 5: "srld", 8: "muld", 12: "divd", 13: "divud",
                    14: "remd", 15: "remud", 256: "subd", 261: "srad"})

_Q3 = _sw(((2, 0b11111),), {
    0: _LOAD, 1: _LOAD_FP, 3: _sw(F3, {0: "fence", 1: "fence_i", 2: "lq"}),
    4: _OP_IMM, 5: "auipc", 6: _OP_IMM_32, 8: _STORE, 9: _STORE_FP, 11: _AMO, 12: _OP,
    13: "lui", 14: _OP_32, 16: _fused("fmadd"), 17: _fused("fmsub"), 18: _fused("fnmsub"),
    19: _fused("fnmadd"), 20: _OP_FP, 21: OP_V, 22: _OP_IMM_64, 24: _BRANCH,
    25: _only(F3, 0, "jalr"), 27: "jal", 28: _SYSTEM, 30: _OP_64,
})

#: the root: the two low bits pick quadrant 0-2 (compressed) or 3 (32-bit and longer)
DECODE_TREE: Node = _sw(((0, 0b11),), {0: _Q0, 1: _Q1, 2: _Q2, 3: _Q3})


def _csr_names() -> dict[int, str]:
    names = {
        0x000: "ustatus", 0x001: "fflags", 0x002: "frm", 0x003: "fcsr", 0x004: "uie",
        0x005: "utvec", 0x008: "vstart", 0x009: "vxsat", 0x00a: "vxrm", 0x00f: "vcsr",
        0x015: "seed", 0x040: "uscratch", 0x041: "uepc", 0x042: "ucause", 0x043: "utval",
        0x044: "uip", 0x100: "sstatus", 0x104: "sie", 0x105: "stvec", 0x106: "scounteren",
        0x140: "sscratch", 0x141: "sepc", 0x142: "scause", 0x143: "stval", 0x144: "sip",
        0x180: "satp", 0x200: "hstatus", 0x202: "hedeleg", 0x203: "hideleg", 0x204: "hie",
        0x205: "htvec", 0x240: "hscratch", 0x241: "hepc", 0x242: "hcause",
        0x243: "hbadaddr", 0x244: "hip", 0x300: "mstatus", 0x301: "misa",
        0x302: "medeleg", 0x303: "mideleg", 0x304: "mie", 0x305: "mtvec",
        0x306: "mcounteren", 0x320: "mucounteren", 0x321: "mscounteren",
        0x322: "mhcounteren", 0x340: "mscratch", 0x341: "mepc", 0x342: "mcause",
        0x343: "mtval", 0x344: "mip", 0x380: "mbase", 0x381: "mbound", 0x382: "mibase",
        0x383: "mibound", 0x384: "mdbase", 0x385: "mdbound", 0x780: "mtohost",
        0x781: "mfromhost", 0x782: "mreset", 0x783: "mipi", 0x784: "miobase",
        0x7a0: "tselect", 0x7a1: "tdata1", 0x7a2: "tdata2", 0x7a3: "tdata3", 0x7b0: "dcsr",
        0x7b1: "dpc", 0x7b2: "dscratch", 0xb00: "mcycle", 0xb01: "mtime",
        0xb02: "minstret", 0xb80: "mcycleh", 0xb81: "mtimeh", 0xb82: "minstreth",
        0xc20: "vl", 0xc21: "vtype", 0xc22: "vlenb", 0xf11: "mvendorid",
        0xf12: "marchid", 0xf13: "mimpid", 0xf14: "mhartid",
    }
    for prefix, base in (("", 0xc00), ("s", 0xd00), ("h", 0xe00)):
        for i, counter in enumerate(("cycle", "time", "instret")):
            names[base + i] = prefix + counter
            names[base + 0x80 + i] = prefix + counter + "h"
    for n in range(3, 32):
        names[0x320 + n] = f"mhpmevent{n}"
        names[0xb00 + n] = f"mhpmcounter{n}"
        names[0xb80 + n] = f"mhpmcounter{n}h"
    for n in range(16):
        names[0x3a0 + n] = f"pmpcfg{n}"
    for n in range(64):
        names[0x3b0 + n] = f"pmpaddr{n}"
    return names


#: CSR number -> the name QEMU 7.2 prints (others print as ``0x%03x``)
CSR_NAMES: dict[int, str] = _csr_names()

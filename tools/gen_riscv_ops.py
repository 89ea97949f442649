#!/usr/bin/env python3
"""Generate ``src/_fast/riscv_ops.pxi`` and ``riscv_jit_ops.pxi``: the RISC-V
hart's op ids and one row of properties per op, read by the decoder, the slow
path and the compiled tier (its register planner, region discovery and emitter
dispatch, and how emit_simple compiles the common ALU shapes).

Adding an op: add its row here (in the group it belongs to), run
``python3 tools/gen_riscv_ops.py`` and commit both files;
``tests/riscv/test_riscv_ops_table.py`` fails while a .pxi is stale.
``--check`` exits 1 when a file differs from what this table makes.

Properties (the flags of a row):

    rs1, rs2    reads integer register rs1 / rs2
    rd          writes integer register rd (x0: the sink x[32])
    frd, frs2   writes float register rd / reads float register rs2
    fp          a float op whose operands depend on its sub-op (exec_fp)
    branch      conditional jump to pc + imm
    jump        unconditional jump to pc + imm
    ends        control never falls through to the next instruction
    load, store a memory access of ``access_size`` bytes through rs1 + imm
    alu         compiled inline without memory or jumps (emit_simple)
    jit         compiled at all (alu, loads, stores, branches, jal, jalr);
                OP_ZB/OP_ZBI are compiled by sub-op (zb_compiled)
    slow        run by exec_slow, outside the interpreter's hot switch
    csr, amo    exec_slow's groups (exec_csr, exec_amo)

The fourth column, for alu ops of a common x86 shape, is how emit_simple
compiles them (``riscv_jit_ops.pxi``): ``form w x86`` with form one of alui
(rd = rs1 op imm), alu3 (rd = rs1 op rs2), shifti, shiftr, slti, slt (set on
less), w 1 for 64-bit or 0 for the W ops (32-bit, sign-extended), and x86 the
encoder's opcode, group extension or condition (x86_enc.pxi).  Empty: the op
has its own code there.
"""

from __future__ import annotations

import sys
from pathlib import Path

FAST = Path(__file__).resolve().parent.parent / "src" / "_fast"
OUT = FAST / "riscv_ops.pxi"
OUT_JIT = FAST / "riscv_jit_ops.pxi"

FLAGS = ["rs1", "rs2", "rd", "frd", "frs2", "fp", "branch", "jump", "ends", "load", "store",
         "alu", "jit", "slow", "csr", "amo"]

ALU_I = "rs1 rd alu jit"
ALU_R = "rs1 rs2 rd alu jit"

FORMS = ["own", "alui", "alu3", "shifti", "shiftr", "slti", "slt"]

# (name, flags, comment, x86 form); the order is the op ids' (OP_NONE = 0)
OPS: list[tuple[str, str, str, str]] = [*((n, f, c, "") for n, f, c in [
    ("NONE", "", "not decoded yet"),
    ("BREAK", "", "a breakpoint or code hook at this pc"),
    ("XPAGE", "", "crosses into the next page"),
    ("ILLEGAL", "slow", "bits = the instruction"),
    ("LUI", "rd alu jit", ""),
    ("AUIPC", "rd alu jit", ""),
    ("JAL", "rd jump ends jit", ""),
    ("JALR", "rs1 rd ends jit", ""),
    *((n, "rs1 rs2 branch jit", "") for n in ("BEQ", "BNE", "BLT", "BGE", "BLTU", "BGEU")),
    *((n, "rs1 rd load jit", "") for n in ("LB", "LH", "LW", "LD", "LBU", "LHU", "LWU")),
    *((n, "rs1 rs2 store jit", "") for n in ("SB", "SH", "SW", "SD")),
    ]),
    ("ADDI", ALU_I, "", "alui 1 ALU_ADD"),
    ("SLTI", ALU_I, "", "slti 1 CC_L"),
    ("SLTIU", ALU_I, "", "slti 1 CC_B"),
    ("XORI", ALU_I, "", "alui 1 ALU_XOR"),
    ("ORI", ALU_I, "", "alui 1 ALU_OR"),
    ("ANDI", ALU_I, "", "alui 1 ALU_AND"),
    ("SLLI", ALU_I, "", "shifti 1 SH_SHL"),
    ("SRLI", ALU_I, "", "shifti 1 SH_SHR"),
    ("SRAI", ALU_I, "", "shifti 1 SH_SAR"),
    ("ADD", ALU_R, "", "alu3 1 X_ADD"),
    ("SUB", ALU_R, "", "alu3 1 X_SUB"),
    ("SLL", ALU_R, "", "shiftr 1 SH_SHL"),
    ("SLT", ALU_R, "", "slt 1 CC_L"),
    ("SLTU", ALU_R, "", "slt 1 CC_B"),
    ("XOR", ALU_R, "", "alu3 1 X_XOR"),
    ("SRL", ALU_R, "", "shiftr 1 SH_SHR"),
    ("SRA", ALU_R, "", "shiftr 1 SH_SAR"),
    ("OR", ALU_R, "", "alu3 1 X_OR"),
    ("AND", ALU_R, "", "alu3 1 X_AND"),
    ("ADDIW", ALU_I, "", "alui 0 ALU_ADD"),
    ("SLLIW", ALU_I, "", "shifti 0 SH_SHL"),
    ("SRLIW", ALU_I, "", "shifti 0 SH_SHR"),
    ("SRAIW", ALU_I, "", "shifti 0 SH_SAR"),
    ("ADDW", ALU_R, "", "alu3 0 X_ADD"),
    ("SUBW", ALU_R, "", "alu3 0 X_SUB"),
    ("SLLW", ALU_R, "", "shiftr 0 SH_SHL"),
    ("SRLW", ALU_R, "", "shiftr 0 SH_SHR"),
    ("SRAW", ALU_R, "", "shiftr 0 SH_SAR"),
    *((n, ALU_R, "", "") for n in ("MUL", "MULH", "MULHSU", "MULHU", "DIV", "DIVU", "REM",
                                   "REMU")),
    *((n, ALU_R, "", "") for n in ("MULW", "DIVW", "DIVUW", "REMW", "REMUW")),
    *((n, f, c, "") for n, f, c in [
    ("NOP", "alu jit", ""),
    ("MV", "rs1 rd alu jit", "addi rd, rs1, 0"),
    ("LI", "rd alu jit", "addi rd, x0, imm"),
    ("J", "jump ends jit", "jal x0"),
    ("PAGEEND", "", "fell off the page (or out of tmp)"),
    ("ZB", "rs1 rs2 rd", "Zba/Zbb/Zbc/Zbs (riscv_zb.pxi): the operation in rs3"),
    ("ZBI", "rs1 rd", "their immediate forms"),
    ("FENCE", "slow alu jit", "a no-op here (and compiled as none)"),
    ("FENCE_I", "slow", ""),
    ("ECALL", "slow ends", ""),
    ("EBREAK", "slow ends", ""),
    ("MRET", "slow ends", ""),
    ("SRET", "slow ends", ""),
    ("WFI", "slow", ""),
    ("SFENCE_VMA", "slow rs1 rs2", ""),
    *((n, "slow csr rs1 rd", "") for n in ("CSRRW", "CSRRS", "CSRRC")),
    *((n, "slow csr rd", "") for n in ("CSRRWI", "CSRRSI", "CSRRCI")),
    ("LR_W", "slow amo rs1 rd", ""),
    ("SC_W", "slow amo rs1 rs2 rd", ""),
    ("LR_D", "slow amo rs1 rd", ""),
    ("SC_D", "slow amo rs1 rs2 rd", ""),
    ("AMO_W", "slow amo rs1 rs2 rd", "the operation in rs3"),
    ("AMO_D", "slow amo rs1 rs2 rd", ""),
    ("FLW", "slow rs1 frd", ""),
    ("FLD", "slow rs1 frd", ""),
    ("FSW", "slow rs1 frs2", ""),
    ("FSD", "slow rs1 frs2", ""),
    ("FP", "slow fp", "the operation in rs3/imm (riscv_float.pxi)"),
    ("JIT", "", "the head of a compiled region (riscv_jit.pxi)"),
    ]),
]


def flag_bits(spec: str) -> int:
    bits = 0
    for word in spec.split():
        if word not in FLAGS:
            raise SystemExit(f"gen_riscv_ops: unknown property {word!r}")
        bits |= 1 << FLAGS.index(word)
    return bits


def render() -> str:
    names = [n for n, _, _, _ in OPS]
    if len(set(names)) != len(names):
        raise SystemExit("gen_riscv_ops: an op is listed twice")
    out = [
        "# Generated by tools/gen_riscv_ops.py from its table: do not edit (run it and",
        "# commit both; tests/riscv/test_riscv_ops_table.py checks this file is current).",
        "#",
        "# The op ids of decoded records and one row of properties per op (OP_PROPS),",
        "# read through op_is(op, P_...) instead of comparing op ids.",
        "",
        "cdef enum:",
    ]
    for i, (name, _, comment, _) in enumerate(OPS):
        line = f"    OP_{name} = {i}"
        out.append(f"{line:<28}# {comment}" if comment else line)
    out.append(f"    OP_COUNT = {len(OPS)}")
    out += ["", "cdef enum:"]
    out += [f"    P_{f.upper()} = 1 << {i}" for i, f in enumerate(FLAGS)]
    out += ["", "cdef extern from *:", '    """', "    static const uint32_t rv_op_props[] = {"]
    for name, spec, _, _ in OPS:
        out.append(f"        0x{flag_bits(spec):05x},  /* {name}: {spec} */")
    out += ["    };", '    """',
            "    const uint32_t OP_PROPS \"rv_op_props\"[]",
            "",
            "",
            "cdef inline bint op_is(int op, uint32_t props) noexcept nogil:",
            '    """Whether ``op`` has any of the properties ``props`` (P_... bits)."""',
            "    return (OP_PROPS[op] & props) != 0",
            "",
            "",
            "def _op_table():",
            '    """{op name: its property bits}, as built (for the table\'s test)."""',
            "    return {",
            ]
    out += [f'        "{name}": OP_PROPS[OP_{name}],' for name in names]
    out += ["    }", ""]
    return "\n".join(out)


def x86_form(name: str, x86: str) -> tuple[str, int, str]:
    """(form, w, x86 constant) of a row's fourth column."""
    if not x86:
        return "own", 0, "0"
    form, w, const = x86.split()
    if form not in FORMS[1:] or w not in ("0", "1"):
        raise SystemExit(f"gen_riscv_ops: {name}: bad x86 form {x86!r}")
    return form, int(w), const


def render_jit() -> str:
    rows = [(name, *x86_form(name, x86)) for name, _, _, x86 in OPS]
    out = [
        "# Generated by tools/gen_riscv_ops.py from its table: do not edit (run it and",
        "# commit both; tests/riscv/test_riscv_ops_table.py checks this file is current).",
        "#",
        "# How emit_simple compiles each op of a common x86 shape (included by",
        "# riscv_jit_alu.pxi, after the encoder): OP_EMIT (EM_OWN: its own code),",
        "# OP_EMIT_W (1: 64-bit, 0: the W ops) and OP_EMIT_X (opcode, extension or condition).",
        "",
        "cdef enum:",
    ]
    out += [f"    EM_{f.upper()} = {i}" for i, f in enumerate(FORMS)]
    out += ["", "cdef uint8_t OP_EMIT[OP_COUNT]", "cdef uint8_t OP_EMIT_W[OP_COUNT]",
            "cdef uint8_t OP_EMIT_X[OP_COUNT]", "OP_EMIT[:] = ["]
    out += [f"    EM_{form.upper()},{'':<{12 - len(form)}}# {name}" for name, form, _, _ in rows]
    out += ["]", "OP_EMIT_W[:] = ["]
    out += [f"    {w},  # {name}" for name, _, w, _ in rows]
    out += ["]", "OP_EMIT_X[:] = ["]
    out += [f"    {x},{'':<{12 - len(x)}}# {name}" for name, _, _, x in rows]
    out += ["]", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    files = {OUT: render(), OUT_JIT: render_jit()}
    if "--check" in argv:
        stale = [p.name for p, text in files.items()
                 if not p.exists() or p.read_text() != text]
        if stale:
            print(f"{', '.join(stale)} stale: run python3 tools/gen_riscv_ops.py",
                  file=sys.stderr)
            return 1
        return 0
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

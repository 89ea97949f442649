"""The compiled tier's x86-64 encoder (``src/_fast/x86_enc.pxi``) against
binutils: every encoder function, over all the registers (and displacements,
immediates, condition codes) it takes, must write bytes that objdump
disassembles as the instruction the function names.  The expected text is
built here from the function's meaning, objdump is the decoder.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from vmforge._fast.riscv import _x86_encode
from vmforge.testing.oracles import require_program

R64 = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
       *(f"r{i}" for i in range(8, 16))]
R32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi",
       *(f"r{i}d" for i in range(8, 16))]
R16 = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di", *(f"r{i}w" for i in range(8, 16))]
R8 = ["al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil", *(f"r{i}b" for i in range(8, 16))]
REGS = range(16)
DISPS = [0, 8, -8, 127, -128, 128, -129, 0x1234, -0x80000000]
CC = {0x0: "o", 0x2: "b", 0x3: "ae", 0x4: "e", 0x5: "ne", 0x6: "be", 0x7: "a",
      0xC: "l", 0xD: "ge", 0xE: "le", 0xF: "g"}
# opcode -> mnemonic ("r, r/m" direction)
RM_OPS = {0x8B: "mov", 0x03: "add", 0x2B: "sub", 0x3B: "cmp", 0x23: "and", 0x0B: "or",
          0x33: "xor"}
ALU = {0: "add", 1: "or", 4: "and", 5: "sub", 6: "xor", 7: "cmp"}
SHIFTS = {0: "rol", 1: "ror", 4: "shl", 5: "shr", 7: "sar"}
GROUP3 = {2: "not", 4: "mul", 5: "imul", 6: "div", 7: "idiv"}
BITS = {4: "bt", 5: "bts", 6: "btr", 7: "btc"}


def _h(v: int) -> str:
    return f"0x{v:x}" if v >= 0 else f"-0x{-v:x}"


def _m(base: int, disp: int) -> str:
    if disp == 0 and base not in (5, 13):                  # (rbp/r13 need a disp8 of 0)
        return f"[{R64[base]}]"
    return f"[{R64[base]}{'+' if disp >= 0 else ''}{_h(disp)}]"


def _u(v: int, bits: int = 64) -> str:
    """An immediate as objdump prints it: sign-extended to the operand's width."""
    return f"0x{v & ((1 << bits) - 1):x}"


def _forms() -> Iterator[tuple[str, tuple[int, ...], str]]:
    """(function, arguments, the instruction objdump must show)."""
    for reg in REGS:
        for base in REGS:
            for disp in DISPS if reg in (0, 9) or base in (4, 5, 12, 13) else [8]:
                m = _m(base, disp)
                for opc, name in RM_OPS.items():
                    yield "op_rm", (1, opc, reg, base, disp), f"{name} {R64[reg]},QWORD PTR {m}"
                    yield "op_rm", (0, opc, reg, base, disp), f"{name} {R32[reg]},DWORD PTR {m}"
                yield "op_rm", (1, 0x89, reg, base, disp), f"mov QWORD PTR {m},{R64[reg]}"
                yield "op_rm", (0, 0x89, reg, base, disp), f"mov DWORD PTR {m},{R32[reg]}"
                yield "op_rm", (1, 0x8D, reg, base, disp), f"lea {R64[reg]},{m}"
                yield "op_rm", (1, 0x63, reg, base, disp), f"movsxd {R64[reg]},DWORD PTR {m}"
                yield "op0f_rm", (0, 0xB6, reg, base, disp), f"movzx {R32[reg]},BYTE PTR {m}"
                yield "op0f_rm", (0, 0xB7, reg, base, disp), f"movzx {R32[reg]},WORD PTR {m}"
                yield "op0f_rm", (1, 0xBE, reg, base, disp), f"movsx {R64[reg]},BYTE PTR {m}"
                yield "op0f_rm", (1, 0xBF, reg, base, disp), f"movsx {R64[reg]},WORD PTR {m}"
                yield "op0f_rm", (1, 0xAF, reg, base, disp), f"imul {R64[reg]},QWORD PTR {m}"
                yield "store8", (reg, base, disp), f"mov BYTE PTR {m},{R8[reg]}"
                yield "store16", (reg, base, disp), f"mov WORD PTR {m},{R16[reg]}"
            for opc, name in RM_OPS.items():
                yield "op_rr", (1, opc, reg, base), f"{name} {R64[reg]},{R64[base]}"
                yield "op_rr", (0, opc, reg, base), f"{name} {R32[reg]},{R32[base]}"
            yield "op_rr", (1, 0x63, reg, base), f"movsxd {R64[reg]},{R32[base]}"
            yield "op_rr", (1, 0x85, reg, base), f"test {R64[base]},{R64[reg]}"
            yield "op_rr", (0, 0x31, reg, base), f"xor {R32[base]},{R32[reg]}"
            yield "mov_rr", (reg, base), f"mov {R64[reg]},{R64[base]}"
            yield "op0f_rr", (1, 0xAF, reg, base), f"imul {R64[reg]},{R64[base]}"
            for cc, name in CC.items():
                yield "op0f_rr", (1, 0x40 | cc, reg, base), f"cmov{name} {R64[reg]},{R64[base]}"
            yield "op0f_rr", (0, 0xB7, reg, base), f"movzx {R32[reg]},{R16[base]}"
            yield "op0f_rr", (1, 0xBF, reg, base), f"movsx {R64[reg]},{R16[base]}"
            if base < 4 or base >= 8:
                yield "op0f_rr", (1, 0xBE, reg, base), f"movsx {R64[reg]},{R8[base]}"
            yield "movzx_r32_r8", (reg, base), f"movzx {R32[reg]},{R8[base]}"
            for ext, name in BITS.items():
                yield "bt_rr", (ext, reg, base), f"{name} {R64[reg]},{R64[base]}"
            for index in (0, 3, 5, 12, 13, 15) if reg in (0, 9, 12, 13) else (1, 12):
                sib = f"{R64[base]}+{R64[index]}"
                for disp in (0, 8, -0x80, 0x1234):
                    m = f"[{sib}*1{_h(disp) if disp < 0 else '+' + _h(disp)}]" \
                        if disp or base in (5, 13) else f"[{sib}*1]"
                    yield ("op_sib", (1, 0x8B, reg, base, index, disp, 0),
                           f"mov {R64[reg]},QWORD PTR {m}")
                    yield ("op_sib", (0, 0xB6, reg, base, index, disp, 1),
                           f"movzx {R32[reg]},BYTE PTR {m}")
                    yield ("op_sib", (0, 0x89, reg, base, index, disp, 4),
                           f"mov WORD PTR {m},{R16[reg]}")
                for sh in range(4):
                    zero = "+0x0" if base in (5, 13) else ""
                    yield ("lea_scaled", (reg, base, index, sh),
                           f"lea {R64[reg]},[{sib}*{1 << sh}{zero}]")
            if base not in (5, 13) and reg != 4:
                for size, width in ((1, "BYTE"), (2, "WORD"), (4, "DWORD")):
                    yield ("cmp_idx_imm8", (size, base, reg, 0),
                           f"cmp {width} PTR [{R64[base]}+{R64[reg]}*1],0x0")
        for v in (0, 5, -1, 0x7FFFFFFF, -0x80000000):
            yield "imm64", (reg, v), f"mov {R64[reg]},{_u(v)}"
        for v in (0x80000000, 1 << 40, -(1 << 40), -0x80000001):
            yield "imm64", (reg, v), f"movabs {R64[reg]},{_u(v)}"
        for v in (0, 4, 0xFFFFFFFF):
            yield "mov_r32_imm32", (reg, v), f"mov {R32[reg]},{_u(v, 32)}"
        yield "zero32", (reg,), f"xor {R32[reg]},{R32[reg]}"
        for ext, name in ALU.items():
            for v in (8, -2, 0x7FFFFFFF, -0x80000000):
                yield "alu_imm", (1, ext, reg, v), f"{name} {R64[reg]},{_u(v)}"
                yield "alu_imm", (0, ext, reg, v), f"{name} {R32[reg]},{_u(v, 32)}"
            for disp in (0, 0x40):
                yield ("alu_m_imm8", (0, ext, reg, disp, 0),
                       f"{name} DWORD PTR {_m(reg, disp)},0x0")
                yield ("alu_m_imm8", (1, ext, reg, disp, 5),
                       f"{name} QWORD PTR {_m(reg, disp)},0x5")
        for ext, name in SHIFTS.items():
            for n in (1, 3, 31, 63):
                yield "shift_imm", (1, ext, reg, n), f"{name} {R64[reg]},{_h(n)}"
            yield "shift_imm", (0, ext, reg, 31), f"{name} {R32[reg]},0x1f"
            yield "shift_cl", (1, ext, reg), f"{name} {R64[reg]},cl"
            yield "shift_cl", (0, ext, reg), f"{name} {R32[reg]},cl"
        for ext, name in GROUP3.items():
            yield "unary", (1, ext, reg), f"{name} {R64[reg]}"
            yield "unary", (0, ext, reg), f"{name} {R32[reg]}"
        if reg < 4:
            for cc, name in CC.items():
                yield "setcc", (cc, reg), f"set{name} {R8[reg]}"
        yield "bswap", (1, reg), f"bswap {R64[reg]}"
        yield "bswap", (0, reg), f"bswap {R32[reg]}"
        for ext, name in BITS.items():
            yield "bt_imm", (ext, reg, 63), f"{name} {R64[reg]},0x3f"
        yield "push", (reg,), f"push {R64[reg]}"
        yield "pop", (reg,), f"pop {R64[reg]}"
        yield "call_r", (reg,), f"call {R64[reg]}"
        yield "jmp_r", (reg,), f"jmp {R64[reg]}"
        for disp in (0, 8, -8):
            yield "jmp_m", (reg, disp), f"jmp QWORD PTR {_m(reg, disp)}"
    yield "cqo", (1,), "cqo"
    yield "cqo", (0,), "cdq"
    yield "ret", (), "ret"
    yield "mfence", (), "mfence"
    for cc, name in CC.items():
        yield "jcc32", (cc,), f"j{name} HERE"
    yield "jmp32", (), "jmp HERE"
    yield "jmp_to", (), "jmp HERE"


def _disassemble(code: bytes, tmp_path) -> dict[int, tuple[str, str]]:
    """offset -> (bytes in hex, instruction) of objdump's listing of ``code``."""
    objdump = require_program("objdump", "binutils")
    path = tmp_path / "code.bin"
    path.write_bytes(code)
    out = subprocess.run([objdump, "-D", "-b", "binary", "-mi386:x86-64", "-M", "intel",
                          str(path)], capture_output=True, text=True, check=True).stdout
    listing: dict[int, tuple[str, str]] = {}
    last = -1
    for line in out.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\t([0-9a-f ]+)\t?(.*)$", line)
        if not m:
            continue
        at, raw, text = int(m.group(1), 16), m.group(2).strip(), m.group(3)
        if text:
            listing[at] = (raw, " ".join(text.split()))
            last = at
        else:                                   # the rest of a long instruction's bytes
            listing[last] = (listing[last][0] + " " + raw, listing[last][1])
    return listing


def test_every_encoder_form_disassembles_as_named(tmp_path):
    forms = list(_forms())
    code = bytearray()
    where = []
    for name, args, _ in forms:
        where.append(len(code))
        code += _x86_encode(name, *args)
    listing = _disassemble(bytes(code), tmp_path)
    bad = []
    for at, (name, args, want) in zip(where, forms, strict=True):
        want = want.replace("HERE", f"0x{at:x}")
        got = listing.get(at, ("", "(not an instruction boundary)"))
        if got[1] != want:
            bad.append(f"{name}{args}: {got[0]} = {got[1]!r}, expected {want!r}")
    assert not bad, f"{len(bad)} of {len(forms)} forms wrong:\n" + "\n".join(bad[:40])
    assert len(listing) == len(forms)          # nothing decoded between the forms


def test_unknown_encoder_function_is_refused():
    with pytest.raises(ValueError, match="no encoder function"):
        _x86_encode("nop")

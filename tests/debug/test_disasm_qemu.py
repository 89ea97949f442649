"""vmforge.debug.disasm against QEMU 7.2 itself: the ``IN:`` blocks that
``qemu-system-riscv64 -d in_asm`` logs must equal ``format_in_asm`` on the same
bytes, byte for byte.

Two sources of blocks: a program assembled here with every instruction form
(RV64 I M A F D C, Zicsr, Zifencei, privileged, Zb*/Zk, reserved encodings), and
the first blocks of Debian's OpenSBI booting on QEMU's ``virt`` board.

The program makes QEMU translate instructions it never executes: each group of
instructions sits behind a load from address 0, which faults at run time after
QEMU has translated (and logged) the whole block; the trap handler resumes at the
address the group left in s11.  So stores, jumps and ``mret`` are disassembled
without running them.
"""

from __future__ import annotations

import random
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from vmforge.debug.disasm import disassemble, format_in_asm
from vmforge.debug.disasm_symbols import ElfSymbol, SymbolTable, lookup_symbol
from vmforge.testing.oracles import require_files, require_program
from vmforge.testing.riscv_asm import TOOLCHAIN

QEMU_PKG = "qemu-system-misc"
OPENSBI = Path("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin")
BASE = 0x8000_0000
MARCH = "rv64gcq_zba_zbb_zbc_zbs_zbkb_zbkx_zknd_zkne_zknh_zksed_zksh_zifencei_zicsr"

#: groups of instructions; QEMU ends a block at a jump, a branch, a CSR access,
#: a system instruction or an illegal one, so each of those closes its group
GROUPS: list[list[str]] = [
    # RV64I arithmetic, every register name
    ["lui a0, 0x12345", "lui t6, 0xfffff", "lui s0, 0x80000", "auipc ra, 0", "auipc sp, 0xfffff",
     "addi a0, a1, -2048", "addi t0, t1, 2047", "addi zero, zero, 0", "addi s1, s2, 0",
     "slti s3, s4, -1", "sltiu s5, s6, 1", "sltiu s7, s8, 5", "xori s9, s10, -1",
     "xori t3, t4, 7", "ori t5, gp, 0x123", "andi tp, a2, -16", "slli a3, a4, 63",
     "srli a5, a6, 1", "srai a7, a0, 33", "add a0, a1, a2", "sub a0, zero, a2",
     "sub a0, a1, a2", "sll s0, s1, s2", "slt t0, t1, zero", "slt t0, zero, t1",
     "slt t0, t1, t2", "sltu a0, zero, a1", "sltu a0, a1, a2", "xor a0, a1, a2",
     "srl a0, a1, a2", "sra a0, a1, a2", "or a0, a1, a2", "and a0, a1, a2",
     "addiw a0, a1, 0", "addiw a0, a1, -5", "slliw a0, a1, 31", "srliw a0, a1, 3",
     "sraiw a0, a1, 7", "addw a0, a1, a2", "subw a0, zero, a2", "subw a0, a1, a2",
     "sllw a0, a1, a2", "srlw a0, a1, a2", "sraw a0, a1, a2"],
    # loads, stores, fences
    ["lb a0, -1(a1)", "lh a0, 2(sp)", "lw a0, 2047(a1)", "ld a0, -2048(a1)",
     "lbu a0, 0(a1)", "lhu a0, 4(a1)", "lwu a0, 8(a1)", "sb a0, -1(a1)", "sh a0, 2(sp)",
     "sw a0, 2047(a1)", "sd a0, -2048(a1)", "fence", "fence rw, rw", "fence iorw, iorw",
     "fence r, w", "fence i, o", "fence.tso"],
    # M
    ["mul a0, a1, a2", "mulh a0, a1, a2", "mulhsu a0, a1, a2", "mulhu a0, a1, a2",
     "div a0, a1, a2", "divu a0, a1, a2", "rem a0, a1, a2", "remu a0, a1, a2",
     "mulw a0, a1, a2", "divw a0, a1, a2", "divuw a0, a1, a2", "remw a0, a1, a2",
     "remuw a0, a1, a2"],
    # A
    ["lr.w a0, (a1)", "lr.w.aq a0, (a1)", "lr.d.aqrl a0, (a1)", "sc.w a0, a2, (a1)",
     "sc.d.rl a0, a2, (a1)", "amoswap.w a0, a2, (a1)", "amoadd.w.aq a0, a2, (a1)",
     "amoxor.w a0, a2, (a1)", "amoor.w a0, a2, (a1)", "amoand.w a0, a2, (a1)",
     "amomin.w a0, a2, (a1)", "amomax.w a0, a2, (a1)", "amominu.w a0, a2, (a1)",
     "amomaxu.w a0, a2, (a1)", "amoswap.d.aqrl a0, a2, (a1)", "amoadd.d a0, a2, (a1)",
     "amoxor.d a0, a2, (a1)", "amoor.d a0, a2, (a1)", "amoand.d a0, a2, (a1)",
     "amomin.d a0, a2, (a1)", "amomax.d a0, a2, (a1)", "amominu.d a0, a2, (a1)",
     "amomaxu.d a0, a2, (a1)"],
    # F and D
    ["flw fa0, -4(a1)", "fsw fa0, 8(sp)", "fld ft0, 16(a0)", "fsd ft11, -16(a0)",
     "fmadd.s fa0, fa1, fa2, fa3", "fmsub.s fa0, fa1, fa2, fa3, rne",
     "fnmsub.s fa0, fa1, fa2, fa3, rtz", "fnmadd.s fa0, fa1, fa2, fa3, rdn",
     "fadd.s fs0, fs1, fs2, rup", "fsub.s fs0, fs1, fs2, rmm", "fmul.s fs0, fs1, fs2",
     "fdiv.s ft8, ft9, ft10", "fsqrt.s fa0, fa1", "fsgnj.s fa0, fa1, fa2",
     "fsgnj.s fa0, fa1, fa1", "fsgnjn.s fa0, fa1, fa2", "fneg.s fa0, fa1",
     "fsgnjx.s fa0, fa1, fa2", "fabs.s fa0, fa1", "fmin.s fa0, fa1, fa2",
     "fmax.s fa0, fa1, fa2", "fcvt.w.s a0, fa1", "fcvt.wu.s a0, fa1, rtz",
     "fcvt.l.s a0, fa1", "fcvt.lu.s a0, fa1", "fmv.x.w a0, fa1", "feq.s a0, fa1, fa2",
     "flt.s a0, fa1, fa2", "fle.s a0, fa1, fa2", "fclass.s a0, fa1", "fcvt.s.w fa0, a1",
     "fcvt.s.wu fa0, a1", "fcvt.s.l fa0, a1", "fcvt.s.lu fa0, a1", "fmv.w.x fa0, a1",
     "fmadd.d fa0, fa1, fa2, fa3", "fmsub.d fa0, fa1, fa2, fa3",
     "fnmsub.d fa0, fa1, fa2, fa3", "fnmadd.d fa0, fa1, fa2, fa3", "fadd.d fa0, fa1, fa2",
     "fsub.d fa0, fa1, fa2", "fmul.d fa0, fa1, fa2", "fdiv.d fa0, fa1, fa2",
     "fsqrt.d fa0, fa1", "fsgnj.d fa0, fa1, fa2", "fmv.d fa0, fa1", "fsgnjn.d fa0, fa1, fa2",
     "fneg.d fa0, fa1", "fsgnjx.d fa0, fa1, fa2", "fabs.d fa0, fa1", "fmin.d fa0, fa1, fa2",
     "fmax.d fa0, fa1, fa2", "fcvt.s.d fa0, fa1", "fcvt.d.s fa0, fa1", "feq.d a0, fa1, fa2",
     "flt.d a0, fa1, fa2", "fle.d a0, fa1, fa2", "fclass.d a0, fa1", "fcvt.w.d a0, fa1",
     "fcvt.wu.d a0, fa1", "fcvt.d.w fa0, a1", "fcvt.d.wu fa0, a1", "fcvt.l.d a0, fa1",
     "fcvt.lu.d a0, fa1", "fmv.x.d a0, fa1", "fcvt.d.l fa0, a1", "fcvt.d.lu fa0, a1",
     "fmv.d.x fa0, a1", ".4byte 0x00b57553"],          # fadd.s with rm=5 (invalid)
    # C (as written, the assembler keeps them 16-bit)
    ["c.addi4spn s0, sp, 16", "c.fld fs0, 8(a1)", "c.lw a0, 4(a1)", "c.ld a5, 248(s1)",
     "c.fsd fa5, 16(a0)", "c.sw a0, 124(a1)", "c.sd a0, 8(a1)", "c.nop", "c.addi a0, -32",
     "c.addiw a0, 31", "c.addiw a1, 0", "c.li a0, 0", "c.li t0, -1", "c.addi16sp sp, -512",
     "c.addi16sp sp, 496", "c.lui a0, 0xfffe1", "c.lui s2, 1", "c.srli a0, 63",
     "c.srai a1, 1", "c.andi a2, -1", "c.sub s0, s1", "c.xor a3, a4", "c.or a5, s0",
     "c.and a0, a1", "c.subw a0, a1", "c.addw a0, a1", "c.slli t0, 1", "c.fldsp ft1, 504(sp)",
     "c.lwsp ra, 252(sp)", "c.ldsp s11, 0(sp)", "c.mv a0, a1", "c.add t1, t2",
     "c.fsdsp fs11, 8(sp)", "c.swsp zero, 12(sp)", "c.sdsp ra, 504(sp)"],
    # Zba, Zbb, Zbc, Zbs
    ["sh1add a0, a1, a2", "sh2add a0, a1, a2", "sh3add a0, a1, a2", "add.uw a0, a1, a2",
     "sh1add.uw a0, a1, a2", "sh2add.uw a0, a1, a2", "sh3add.uw a0, a1, a2",
     "slli.uw a0, a1, 3", "andn a0, a1, a2", "orn a0, a1, a2", "xnor a0, a1, a2",
     "clz a0, a1", "ctz a0, a1", "cpop a0, a1", "clzw a0, a1", "ctzw a0, a1",
     "cpopw a0, a1", "max a0, a1, a2", "maxu a0, a1, a2", "min a0, a1, a2",
     "minu a0, a1, a2", "sext.b a0, a1", "sext.h a0, a1", "zext.h a0, a1", "rol a0, a1, a2",
     "rolw a0, a1, a2", "ror a0, a1, a2", "rori a0, a1, 5", "roriw a0, a1, 5",
     "rorw a0, a1, a2", "orc.b a0, a1", "rev8 a0, a1", "clmul a0, a1, a2",
     "clmulh a0, a1, a2", "clmulr a0, a1, a2", "bclr a0, a1, a2", "bclri a0, a1, 40",
     "bext a0, a1, a2", "bexti a0, a1, 3", "binv a0, a1, a2", "binvi a0, a1, 3",
     "bset a0, a1, a2", "bseti a0, a1, 63"],
    # Zbk*/Zk: not in QEMU's default CPU, so each one ends its block
    *([insn] for insn in (
        "pack a0, a1, a2", "packh a0, a1, a2", "packw a0, a1, a2", "brev8 a0, a1",
        "xperm4 a0, a1, a2", "xperm8 a0, a1, a2", "aes64ds a0, a1, a2", "aes64dsm a0, a1, a2",
        "aes64es a0, a1, a2", "aes64esm a0, a1, a2", "aes64im a0, a1", "aes64ks1i a0, a1, 3",
        "aes64ks2 a0, a1, a2", "sha256sig0 a0, a1", "sha256sig1 a0, a1", "sha256sum0 a0, a1",
        "sha256sum1 a0, a1", "sha512sig0 a0, a1", "sha512sig1 a0, a1", "sha512sum0 a0, a1",
        "sha512sum1 a0, a1", "sm3p0 a0, a1", "sm3p1 a0, a1", "sm4ed a0, a1, a2, 1",
        "sm4ks a0, a1, a2, 3")),
    # jumps and branches, one per block (targets print as '# 0x...')
    ["jal ra, .+2048"], ["jal zero, .-4"], ["jal t0, .+8"], ["jalr ra, 0(a0)"],
    ["jalr zero, 0(ra)"], ["jalr zero, 0(a5)"], ["jalr zero, 8(a5)"], ["jalr t0, -4(a1)"],
    ["beq a0, a1, .+8"], ["beq a0, zero, .-4096"], ["bne a0, a1, .+4094"],
    ["bne s0, zero, .+16"], ["blt a0, a1, .+8"], ["blt a0, zero, .+8"], ["blt zero, a0, .+8"],
    ["bge a0, a1, .-8"], ["bge zero, a1, .+8"], ["bge a1, zero, .+8"], ["bltu a0, a1, .+8"],
    ["bgeu a0, a1, .+8"], ["c.j .-2048"], ["c.j .+2046"], ["c.jr a0"], ["c.jr ra"],
    ["c.jalr a1"], ["c.beqz a0, .-256"], ["c.bnez s1, .+254"], ["c.ebreak"],
    # system and privileged
    ["ecall"], ["ebreak"], ["mret"], ["sret"], ["wfi"], ["sfence.vma"],
    ["sfence.vma a0"], ["sfence.vma a0, a1"], ["fence.i"], [".4byte 0x00200073"],  # uret
    # Zicsr, with and without CSR names, and the pseudo-instructions on them
    ["csrrw a0, mstatus, a1"], ["csrrs a0, mepc, zero"], ["csrrc a0, mtvec, a1"],
    ["csrrwi a0, mscratch, 5"], ["csrrsi zero, mie, 31"], ["csrrci a0, satp, 1"],
    ["csrr a0, 0x7c0"], ["csrr a0, pmpaddr13"], ["csrr a0, pmpcfg2"], ["csrw pmpaddr63, a0"],
    ["rdcycle a0"], ["rdtime a0"], ["rdinstret a0"], ["csrr a0, cycleh"], ["frcsr a0"],
    ["frrm a0"], ["frflags a0"], ["fscsr a0, a1"], ["fsrm a0, a1"], ["fsflags a0, a1"],
    ["fsrmi a0, 3"], ["fsflagsi a0, 1"], ["csrr a0, mhartid"], ["csrr a0, mhpmcounter17h"],
    ["csrr a0, hpmcounter3"], ["csrw mhpmevent31, a0"], ["csrr a0, 0xfff"],
    # Q (not in QEMU's default CPU: each is illegal there and ends its block)
    ["flq fa0, 16(a1)"], ["fsq fa0, 16(a1)"], ["fadd.q fa0, fa1, fa2"],
    ["fcvt.q.d fa0, fa1"], ["fmv.q fa0, fa1"],
    # reserved encodings: QEMU prints 'illegal' or what its decoder guesses
    [".2byte 0x0000"], [".2byte 0x2001"], [".2byte 0x8002"], [".2byte 0x0001 + (1 << 7)"],
    [".4byte 0x00007003"], [".4byte 0x0000200f"], [".4byte 0xffffffff & ~0x7c"],
    [".4byte 0x0000006b"],
    # 48- and 64-bit encodings: QEMU translates 4 bytes, disassembles 6 or 8, complains
    [".2byte 0x001f, 0x1234, 0x5678"], [".2byte 0x003f, 0x1234, 0x5678, 0x9abc"],
]

TRAP = """
trap:
    beqz s11, 1f
    csrw mepc, s11
    li s11, 0
    mret
1:  li t0, 0x100000
    li t1, 0x3333 | (1 << 16)
    sw t1, 0(t0)
    j 1b
"""


def elf_symbols(elf: Path) -> list[ElfSymbol]:
    """The symbol table of ``elf`` in file order, as readelf shows it."""
    readelf = require_program("riscv64-unknown-elf-readelf", TOOLCHAIN)
    out = subprocess.run([readelf, "-sW", str(elf)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    types = {"NOTYPE": 0, "OBJECT": 1, "FUNC": 2, "SECTION": 3, "FILE": 4}
    special = {"UND": 0, "ABS": 0xFFF1, "COM": 0xFFF2}
    symbols = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 7 or not fields[0].rstrip(":").isdigit():
            continue
        ndx = fields[6]
        symbols.append(ElfSymbol(fields[7] if len(fields) > 7 else "", int(fields[1], 16),
                                 int(fields[2], 0), types.get(fields[3], 0),
                                 special[ndx] if ndx in special else int(ndx)))
    return symbols


def build_program(tmp: Path) -> tuple[Path, bytes, list[tuple[int, int]]]:
    """Assemble GROUPS behind faulting loads; the ELF, its flat image at BASE and the
    (start, end) addresses of each group."""
    as_ = require_program("riscv64-unknown-elf-as", TOOLCHAIN)
    ld = require_program("riscv64-unknown-elf-ld", TOOLCHAIN)
    objcopy = require_program("riscv64-unknown-elf-objcopy", TOOLCHAIN)
    nm = require_program("riscv64-unknown-elf-nm", TOOLCHAIN)
    # every group starts a block on a 512-byte boundary, so no block crosses a page
    # (QEMU would end it there, and the rest would never be translated)
    lines = [".option norvc", ".text", ".globl _start", "_start:",
             "la t0, trap", "csrw mtvec, t0", "li t0, 0x6000", "csrs mstatus, t0",
             "li s11, 0", "j resume0"]
    for n, group in enumerate(GROUPS):
        rvc = any(insn.startswith("c.") for insn in group)
        # function symbols for the IN: lines, some sized, some not (QEMU sizes those)
        lines += [".balign 512", f".type resume{n}, @function",
                  *([f".size resume{n}, 8"] if n % 3 == 0 else []),
                  f"resume{n}:", f"la s11, resume{n + 1}", "ld t0, 0(zero)",
                  f".option {'rvc' if rvc else 'norvc'}", f"group{n}:", *group, f"end{n}:",
                  ".option norvc"]
    lines += [".balign 512", f"resume{len(GROUPS)}:", "li t0, 0x100000", "li t1, 0x5555",
              "sw t1, 0(t0)", "2: j 2b", TRAP]
    src, obj = tmp / "prog.S", tmp / "prog.o"
    elf, raw = tmp / "prog.elf", tmp / "prog.bin"
    src.write_text("\n".join(lines) + "\n")
    subprocess.run([as_, f"-march={MARCH}", "-mabi=lp64d", "-o", str(obj), str(src)],
                   check=True, timeout=60)
    subprocess.run([ld, "-Ttext", hex(BASE), "-o", str(elf), str(obj)], check=True, timeout=60)
    subprocess.run([objcopy, "-O", "binary", str(elf), str(raw)], check=True, timeout=60)
    symbols = {}
    for line in subprocess.run([nm, str(elf)], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        value, _, name = line.split()
        symbols[name] = int(value, 16)
    groups = [(symbols[f"group{n}"], symbols[f"end{n}"]) for n in range(len(GROUPS))]
    return elf, raw.read_bytes(), groups


def run_qemu(args: list[str], log: Path, *, until: float) -> str:
    """Run qemu-system-riscv64 with ``-d in_asm`` until it exits or ``until`` seconds
    pass; the log's text."""
    qemu = require_program("qemu-system-riscv64", QEMU_PKG)
    proc = subprocess.Popen([qemu, "-M", "virt", "-nographic", "-accel", "tcg",
                             "-d", "in_asm", "-D", str(log), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=until)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return log.read_text()


BLOCK = re.compile(r"^-{16}\nIN: (.*)\n(Priv: (\d+); Virt: (\d+)\n)?((?:0x.*\n)+)"
                   r"((?:Disassembler disagrees.*\nPlease report.*\n)?)\n", re.M)
LINE = re.compile(r"^0x([0-9a-f]{16}):  ([0-9a-f]+) ")


def blocks(log: str) -> list[tuple[str, int, int, int, str]]:
    """Each IN: record as (symbol, priv, virt, pc, whole text); the blocks must tile the
    log exactly (nothing unparsed between them)."""
    out = []
    pos = 0
    for m in BLOCK.finditer(log):
        assert m.start() == pos, f"unparsed log text: {log[pos:m.start()][:200]!r}"
        first = LINE.match(m.group(5))
        assert first is not None
        out.append((m.group(1), int(m.group(3)), int(m.group(4)), int(first.group(1), 16),
                    m.group(0)))
        pos = m.end()
    assert pos == len(log), f"unparsed log tail: {log[pos:][:200]!r}"
    return out


def block_bytes(text: str, image: bytes, base: int) -> tuple[int, bytes, int]:
    """The pc of a logged block, its bytes taken from ``image`` (loaded at ``base``)
    from its first address to the end of its last instruction, and the block's size
    (QEMU's translator takes a longer encoding as a 4-byte one and then says so)."""
    lines = [LINE.match(line) for line in text.splitlines()[3:]]
    addrs = [(int(m.group(1), 16), len(m.group(2)) // 2) for m in lines if m]
    start, (last, last_len) = addrs[0][0], addrs[-1]
    size = last + (4 if "Disassembler disagrees" in text else last_len) - start
    return start, image[start - base:last + last_len - base], size


def test_every_instruction_form_matches_qemu(tmp_path: Path) -> None:
    elf, image, groups = build_program(tmp_path)
    log = run_qemu(["-bios", "none", "-kernel", str(elf)], tmp_path / "log", until=30)
    logged = blocks(log)
    symbols = [SymbolTable(elf_symbols(elf))]
    covered: set[int] = set()
    compared = 0
    for symbol, priv, virt, pc, text in logged:
        if not BASE <= pc < BASE + len(image):
            continue                      # the board's reset vector in ROM
        assert lookup_symbol(symbols, pc) == symbol
        start, code, size = block_bytes(text, image, BASE)
        assert format_in_asm(start, code, symbol or None, size=size, priv=priv,
                             virt=virt) == text
        compared += 1
        covered.update(range(start, start + len(code)))
    missing = [n for n, (lo, hi) in enumerate(groups) if not set(range(lo, hi)) <= covered]
    assert not missing, f"groups QEMU did not translate: {[GROUPS[n] for n in missing]}"
    assert compared > len(GROUPS)
    assert sum(1 for b in logged if b[0]) > len(GROUPS) // 2     # symbols were found


def test_opensbi_boot_blocks_match_qemu(tmp_path: Path) -> None:
    (firmware,) = require_files([OPENSBI], "Debian's OpenSBI (apt-get install opensbi)")
    image = firmware.read_bytes()
    log_path = tmp_path / "log"
    qemu_log = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:      # a loaded host may need more than one try
        qemu_log = run_qemu(["-bios", str(firmware)], log_path, until=8)
        if qemu_log.count("\nIN: ") >= 400:
            break
    logged = [b for b in blocks(qemu_log[:qemu_log.rfind("----------------\n")])
              if BASE <= b[3] < BASE + len(image)]
    assert len(logged) >= 300, f"only {len(logged)} OpenSBI blocks logged"
    for symbol, priv, virt, pc, text in logged[:2000]:
        start, code, size = block_bytes(text, image, BASE)
        assert start == pc
        assert format_in_asm(start, code, symbol or None, size=size, priv=priv,
                             virt=virt) == text


@pytest.mark.parametrize("xlen", [64])
def test_log_parser_sees_every_line(xlen: int) -> None:
    """The parser above accepts the formatter's own output (so a failure above is a
    disassembly difference, not a parsing one)."""
    text = format_in_asm(BASE, bytes.fromhex("130515009780ffff8280"), "s", priv=1, virt=0,
                         xlen=xlen)
    assert [b[1:4] for b in blocks(text)] == [(1, 0, BASE)]


def random_code(seed: int, count: int, majors: tuple[int, ...] = ()) -> bytes:
    """``count`` random instructions, 16- and 32-bit (and a few 48/64-bit); the
    32-bit ones with a major opcode from ``majors`` when given."""
    rng = random.Random(seed)
    out = bytearray()
    while count:
        kind = rng.random()
        if kind < 0.4:
            word = rng.getrandbits(16)
            if word & 3 == 3:
                continue
            out += word.to_bytes(2, "little")
        elif kind < 0.99:
            word = rng.getrandbits(32) | 3
            if majors:
                word = (word & ~0x7F) | rng.choice(majors)
            if word & 0x1C == 0x1C:
                continue
            out += word.to_bytes(4, "little")
        else:
            size = rng.choice((6, 8))
            low = 0b011111 if size == 6 else 0b0111111
            word = (rng.getrandbits(8 * size) & ~0x7F) | low
            out += word.to_bytes(size, "little")
        count -= 1
    return bytes(out)


def monitor_disassembly(code: bytes, count: int, tmp: Path, xlen: int = 64) -> list[str]:
    """QEMU's monitor ``x/<count>i`` over ``code`` loaded at BASE (the same
    disassembler as -d in_asm): its lines.  ``quit`` goes only once every line is
    read: QEMU drops monitor output still queued when it exits."""
    qemu = require_program(f"qemu-system-riscv{xlen}", QEMU_PKG)
    blob = tmp / "code.bin"
    blob.write_bytes(code)
    proc = subprocess.Popen([qemu, "-M", "virt", "-display", "none", "-monitor", "stdio",
                             "-serial", "none", "-S", "-bios", "none", "-accel", "tcg",
                             "-device", f"loader,file={blob},addr={BASE:#x}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    lines: list[str] = []
    try:
        proc.stdin.write(f"x/{count}i {BASE:#x}\n")
        proc.stdin.flush()
        for line in proc.stdout:
            if line.startswith("0x"):
                lines.append(line.rstrip("\r\n"))
                if len(lines) == count:
                    break
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        proc.wait(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return lines


VECTOR_MAJORS = (0x07, 0x27, 0x57)     # LOAD-FP, STORE-FP (vector widths), OP-V


@pytest.mark.parametrize(("seed", "majors", "xlen"), [
    (1, (), 64), (2, (), 64), (3, (), 64), (4, VECTOR_MAJORS, 64), (5, (), 32),
    (6, VECTOR_MAJORS, 32)])
def test_random_encodings_match_qemu_monitor(seed: int, majors: tuple[int, ...], xlen: int,
                                             tmp_path: Path) -> None:
    """Random encodings (reserved ones included) through QEMU's monitor ``x/i``,
    which prints with the same disassembler as ``-d in_asm``."""
    count = 6000
    code = random_code(seed, count, majors)
    expected = monitor_disassembly(code, count, tmp_path, xlen)
    assert len(expected) == count
    got = [insn.line(xlen) for insn in disassemble(code, BASE, xlen=xlen)]
    mismatches = [(g, e) for g, e in zip(got, expected, strict=True) if g != e]
    assert not mismatches, f"{len(mismatches)} differ, first ones: {mismatches[:5]}"

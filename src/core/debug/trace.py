"""QEMU's CPU traces for RISC-V harts: ``-d in_asm``, ``exec``, ``cpu`` (``fpu``),
``nochain``, ``mmu`` and ``-dfilter``, in QEMU 7.2's formats.

QEMU logs a translation block (TB) when it translates it (``in_asm``: the
``IN:`` record), and each time it runs one (``exec``: a ``Trace`` line; ``cpu``:
the register dump after it).  vmforge's harts have no TBs of QEMU's shape, so a
:class:`CpuTrace` rebuilds them with the rules of QEMU 7.2's RISC-V translator
from a code hook (:mod:`vmforge.debug.hooks`): a block starts where control
arrives other than by falling through the current block, and runs to the first
branch, jump, CSR instruction, ``ecall``/``ebreak``/``mret``/``sret``, ``fence.i``,
illegal instruction,
floating-point instruction while ``mstatus.FS`` is off, page end (only a
block's first instruction may cross into the next page) or 512 instructions.
``in_asm`` logs each block once per (pc, TB flags, satp) as QEMU's TB cache
would (code changed in place is not seen again); ``exec``/``cpu`` log every
block run, as QEMU does with ``nochain`` (``nochain`` is therefore accepted and
changes nothing).  What is not QEMU's: the
host address in ``Trace`` lines is 0 (vmforge has no per-block host code) and
``cflags`` carry only the ``nochain`` bit and cluster.  Names come from the function
symbols of the ELF files the board loaded, found as QEMU's ``lookup_symbol`` finds them.

Nothing is traced, and nothing costs, unless a category asks for it; with
``-dfilter`` only blocks starting in the ranges are hooked at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from vmforge.debug.disasm import format_in_asm
from vmforge.debug.disasm_symbols import SymbolTable, lookup_symbol
from vmforge.debug.hooks import Hooks
from vmforge.debug.mmu import read_insn, walk
from vmforge.errors import VmforgeError

if TYPE_CHECKING:
    from vmforge.accel.interp import RiscvHart
    from vmforge.loader import ElfSymbol

__all__ = ["CPU_CATEGORIES", "CpuTrace", "MmuTrace", "dump_state", "parse_dfilter"]

#: the ``-d`` categories this module serves
CPU_CATEGORIES = ("in_asm", "exec", "cpu", "fpu", "nochain", "mmu")
MAX_INSNS = 512             # QEMU's TCG_MAX_INSNS
_MAX_BLOCKS = 1 << 18
_MSTATUS_FS = 0x6000
_TB_VILL = 1 << 12          # no V extension: QEMU sets vill in the TB flags
_TB_XL64 = 2 << 20
_CF_NO_GOTO_TB = 0x200
_CF_CLUSTER = 0xFF000000
#: the major opcodes of RV64GC (anything else raises an illegal instruction)
_RV64GC_OPCODES = frozenset((0x03, 0x07, 0x0F, 0x13, 0x17, 0x1B, 0x23, 0x27, 0x2F, 0x33,
                             0x37, 0x3B, 0x43, 0x47, 0x4B, 0x4F, 0x53, 0x63, 0x67, 0x6F,
                             0x73))

#: the CSRs QEMU 7.2's riscv_cpu_dump_state prints for a CPU without H, in order
_DUMP_CSRS = ("mhartid", "mstatus", "mip", "mie", "mideleg", "medeleg", "mtvec", "stvec",
              "mepc", "sepc", "mcause", "scause", "mtval", "stval", "mscratch", "sscratch",
              "satp")
_FREGNAMES = [f"f{i}/{n}" for i, n in enumerate(
    "ft0 ft1 ft2 ft3 ft4 ft5 ft6 ft7 fs0 fs1 fa0 fa1 fa2 fa3 fa4 fa5 fa6 fa7 "
    "fs2 fs3 fs4 fs5 fs6 fs7 fs8 fs9 fs10 fs11 ft8 ft9 ft10 ft11".split())]
_REGNAMES = [f"x{i}/{n}" for i, n in enumerate(
    "zero ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 "
    "s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6".split())]


class TraceError(VmforgeError):
    """A ``-d``/``-dfilter`` argument that cannot be used."""


def parse_dfilter(text: str) -> list[tuple[int, int]]:
    """QEMU's ``-dfilter`` ranges: ``START+SIZE``, ``START-SIZE`` (the SIZE bytes
    before START... up to START) or ``START..END``, comma-separated; inclusive
    ``(first, last)`` pairs."""
    out = []
    for item in text.split(","):
        try:
            if ".." in item:
                a, b = item.split("..", 1)
                first, last = int(a, 0), int(b, 0)
            elif "+" in item[1:]:
                a, b = item.split("+", 1)
                first = int(a, 0)
                last = first + int(b, 0) - 1
            elif "-" in item[1:]:
                a, b = item.split("-", 1)
                last = int(a, 0)
                first = last - int(b, 0) + 1
            else:
                raise ValueError(item)
        except ValueError:
            raise TraceError(f"-dfilter: {item!r} is not START+SIZE, START-SIZE or "
                             "START..END") from None
        if last < first or first < 0:
            raise TraceError(f"-dfilter: {item!r} is an empty range")
        out.append((first, last))
    return out


def dump_state(hart: RiscvHart, fpu: bool = False) -> str:
    """The register dump of QEMU 7.2's ``-d cpu`` (``riscv_cpu_dump_state``, no H);
    ``fpu`` adds the F registers (``-d cpu,fpu``)."""
    lines = [f" {'pc':<8} {hart.pc:016x}"]
    lines += [f" {name:<8} {hart.csr(name):016x}" for name in _DUMP_CSRS]
    regs = [f" {_REGNAMES[i]:<8} {hart.x[i]:016x}" for i in range(32)]
    if fpu:
        regs += [f" {_FREGNAMES[i]:<8} {hart.f[i]:016x}" for i in range(32)]
    lines += ["".join(regs[i:i + 4]) for i in range(0, len(regs), 4)]
    return "\n".join(lines) + "\n"


def _ends_tb(bits: int, fs_on: bool) -> bool:
    """Whether QEMU 7.2's translator ends a TB after the instruction ``bits``."""
    if bits & 3 != 3:                               # compressed
        q, f3 = bits & 3, (bits >> 13) & 7
        if bits & 0xFFFF == 0:
            return True                             # the defined illegal instruction
        if q == 1 and f3 in (5, 6, 7):              # c.j, c.beqz, c.bnez
            return True
        if q == 2 and f3 == 4 and (bits >> 2) & 0x1F == 0:
            return True                             # c.jr, c.jalr, c.ebreak (c.mv: rs2 != 0)
        fp = (q == 0 and f3 in (1, 5)) or (q == 2 and f3 in (1, 5))    # c.fld/c.fsd(sp)
        return fp and not fs_on
    opcode = bits & 0x7F
    if opcode == 0x73:                              # system: CSRs, ecall, ebreak, xret end it;
        return (bits != 0x10500073 and (bits >> 25) != 0x09) or (bits >> 12) & 7 != 0
    if opcode in (0x63, 0x6F, 0x67):                # (wfi and sfence.vma do not)
        return True
    if opcode == 0x0F and (bits >> 12) & 7 == 1:    # fence.i
        return True
    if opcode not in _RV64GC_OPCODES:               # illegal here
        return True
    if opcode in (0x07, 0x27, 0x43, 0x47, 0x4B, 0x4F, 0x53):
        return not fs_on                            # FP with FS off: illegal
    return False


class CpuTrace:
    """``-d in_asm/exec/cpu`` for ``harts``, written through ``write`` (a whole
    record per call, no trailing newline added)."""

    def __init__(self, hooks: Hooks, harts: Sequence[RiscvHart], memory: Any,
                 categories: Sequence[str], write: Callable[[str], None],
                 ranges: Sequence[tuple[int, int]] | None = None) -> None:
        self.memory = memory
        self.write = write
        self.in_asm = "in_asm" in categories
        self.exec = "exec" in categories
        self.cpu = "cpu" in categories
        self.fpu = "fpu" in categories
        self.nochain = "nochain" in categories
        self.ranges = list(ranges) if ranges else [(0, (1 << 64) - 1)]
        #: the blocks translated so far: (pc, TB flags, satp) -> where each ends
        self.blocks: dict[tuple[int, int, int], int] = {}
        self._index = {id(h): i for i, h in enumerate(harts)}
        self._end = {id(h): 0 for h in harts}      # where each hart's current block ends
        #: the function symbols of the ELF files loaded (QEMU's ``IN: name``), oldest first
        self.symbol_tables: list[SymbolTable] = []
        self._symbol_files: set[str] = set()
        once = not (self.exec or self.cpu)     # in_asm alone: each block once
        self.handles = [hooks.tracer(self._on_insn, first, last, once=once)
                        for first, last in self.ranges]
        if not (self.in_asm or self.exec or self.cpu):
            for handle in self.handles:
                hooks.remove(handle)
            self.handles = []

    def add_symbols(self, path: str, symbols: Sequence[ElfSymbol]) -> None:
        """An ELF file's symbols, for the names QEMU prints (once per file)."""
        if path not in self._symbol_files:
            self._symbol_files.add(path)
            self.symbol_tables.append(SymbolTable(symbols))

    def _on_insn(self, hart: RiscvHart, pc: int, size: int, sequential: bool) -> int | None:
        """Log the block starting at ``pc``; its end (no calls until there)."""
        current = self._end[id(hart)]
        if sequential and pc < current:     # inside the block (another hook asked)
            return current
        mstatus = hart.csr("mstatus")
        priv = hart.priv
        flags = priv | _TB_VILL | (mstatus & _MSTATUS_FS) | _TB_XL64
        key = (pc, flags, hart.csr("satp") if priv != 3 else 0)
        known = self.blocks.get(key)
        if known is not None:
            end = known
        else:                               # QEMU translates it: scan it as QEMU would
            block = self._scan(hart, pc, bool(mstatus & _MSTATUS_FS))
            last, raw = block[-1]
            end = last + len(raw)
            if len(self.blocks) >= _MAX_BLOCKS:
                self.blocks.clear()         # (QEMU's tb_flush, when its buffer is full)
            self.blocks[key] = end
            if self.in_asm:
                code = b"".join(raw for _, raw in block)
                self.write(format_in_asm(pc, code, lookup_symbol(self.symbol_tables, pc),
                                         priv=priv).rstrip("\n") + "\n")
        self._end[id(hart)] = end
        if self.exec:
            cflags = _CF_CLUSTER | (_CF_NO_GOTO_TB if self.nochain else 0)
            self.write(f"Trace {self._index[id(hart)]}: 0x0 [{0:016x}/{pc:016x}/{flags:08x}/"
                       f"{cflags:08x}] {lookup_symbol(self.symbol_tables, pc)}")
        if self.cpu:
            self.write(dump_state(hart, self.fpu).rstrip("\n"))
        return end if end > pc else None

    def _scan(self, hart: RiscvHart, pc: int, fs_on: bool) -> list[tuple[int, bytes]]:
        """The instructions of the TB QEMU would translate at ``pc``."""
        out: list[tuple[int, bytes]] = []
        at = pc
        page = pc & ~0xFFF
        while len(out) < MAX_INSNS:
            raw = read_insn(hart, self.memory, at)
            if raw is None:
                break
            length = len(raw)
            if out and ((at & ~0xFFF) != page or ((at + length - 1) & ~0xFFF) != page):
                break                   # only the first instruction may leave the page
            out.append((at, raw))
            at += length
            if _ends_tb(int.from_bytes(raw, "little"), fs_on):
                break
        return out or [(pc, b"")]


class MmuTrace:
    """``-d mmu``: each translation the harts make to fill a TLB entry, in the
    lines of QEMU 7.2's ``riscv_cpu_tlb_fill`` (the access, the translation's
    result with QEMU's ``prot`` bits, then the PMP check, which always passes
    here: the hart implements no PMP checks).  vmforge's TLBs are not QEMU's
    (separate ones for loads, stores and fetches), so which accesses miss
    differs; each line means what QEMU's does."""

    def __init__(self, harts: Sequence[RiscvHart], memory: Any,
                 write: Callable[[str], None]) -> None:
        self.memory = memory
        self.write = write
        for hart in harts:
            hart._set_mmu_hook(self._hook(hart))

    def _hook(self, hart: RiscvHart) -> Callable[[int, int, bool, int], None]:
        def on_fill(va: int, access: int, ok: bool, pa: int) -> None:
            self.write(f"riscv_cpu_tlb_fill ad {va:x} rw {access} mmu_idx {hart.priv}")
            prot = self._prot(hart, va, access) if ok else 0
            self.write(f"riscv_cpu_tlb_fill address={va:x} ret {0 if ok else 1} "
                       f"physical {pa if ok else 0:016x} prot {prot}")
            if ok:
                self.write(f"riscv_cpu_tlb_fill PMP address={pa:016x} ret 0 prot 7 "
                           "tlb_size 4096")
        return on_fill

    def _prot(self, hart: RiscvHart, va: int, access: int) -> int:
        """QEMU's PAGE_READ 1 | PAGE_WRITE 2 | PAGE_EXEC 4 for the leaf PTE."""
        found = walk(hart, self.memory, va, fetch=access == 2)
        if found is None:
            return 0
        pte = found[1]
        if pte < 0:
            return 7                                        # no paging: everything
        mxr = bool(hart.csr("mstatus") & (1 << 19))
        prot = 1 if pte & 2 or (pte & 8 and mxr) else 0
        prot |= 4 if pte & 8 else 0
        if pte & 4 and (access == 1 or pte & 0x80):         # W: on stores, or already dirty
            prot |= 2
        return prot

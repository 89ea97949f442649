"""vCPU state as plain values: registers, segments, special registers, FPU, CPUID.

The layouts are the kernel's (``vmforge._fast.kvm`` reads and writes the
structures); these classes only name the fields.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, field, fields
from typing import Any

__all__ = ["CpuidEntry", "DTable", "Fpu", "Regs", "Segment", "Sregs"]


@dataclass
class Regs:
    """``struct kvm_regs``: the general-purpose registers, rip and rflags."""

    rax: int = 0
    rbx: int = 0
    rcx: int = 0
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    rsp: int = 0
    rbp: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rip: int = 0
    rflags: int = 0x2

    def as_tuple(self) -> tuple[int, ...]:
        return astuple(self)


@dataclass
class Segment:
    """``struct kvm_segment``: a segment register with its hidden part."""

    base: int = 0
    limit: int = 0xFFFF
    selector: int = 0
    type: int = 3
    present: int = 1
    dpl: int = 0
    db: int = 0
    s: int = 1
    l: int = 0  # noqa: E741  (the kernel's name)
    g: int = 0
    avl: int = 0
    unusable: int = 0

    def as_tuple(self) -> tuple[int, ...]:
        return astuple(self)


@dataclass
class DTable:
    """``struct kvm_dtable``: GDTR or IDTR."""

    base: int = 0
    limit: int = 0xFFFF


_SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")


@dataclass
class Sregs:
    """``struct kvm_sregs``: segments, descriptor tables, control registers, EFER."""

    cs: Segment = field(default_factory=Segment)
    ds: Segment = field(default_factory=Segment)
    es: Segment = field(default_factory=Segment)
    fs: Segment = field(default_factory=Segment)
    gs: Segment = field(default_factory=Segment)
    ss: Segment = field(default_factory=Segment)
    tr: Segment = field(default_factory=Segment)
    ldt: Segment = field(default_factory=Segment)
    gdt: DTable = field(default_factory=DTable)
    idt: DTable = field(default_factory=DTable)
    cr0: int = 0
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    cr8: int = 0
    efer: int = 0
    apic_base: int = 0
    interrupt_bitmap: tuple[int, int, int, int] = (0, 0, 0, 0)

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Sregs:
        kw: dict[str, Any] = {k: Segment(*raw[k]) for k in _SEGMENTS}
        kw["gdt"] = DTable(*raw["gdt"])
        kw["idt"] = DTable(*raw["idt"])
        for k in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"):
            kw[k] = raw[k]
        kw["interrupt_bitmap"] = tuple(raw["interrupt_bitmap"])
        return cls(**kw)

    def to_raw(self) -> dict[str, Any]:
        raw: dict[str, Any] = {k: getattr(self, k).as_tuple() for k in _SEGMENTS}
        raw["gdt"] = (self.gdt.base, self.gdt.limit)
        raw["idt"] = (self.idt.base, self.idt.limit)
        for k in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"):
            raw[k] = getattr(self, k)
        raw["interrupt_bitmap"] = tuple(self.interrupt_bitmap)
        return raw


@dataclass
class Fpu:
    """``struct kvm_fpu``: x87 and SSE state in FXSAVE terms."""

    fpr: bytes = bytes(128)
    fcw: int = 0x37F
    fsw: int = 0
    ftwx: int = 0
    last_opcode: int = 0
    last_ip: int = 0
    last_dp: int = 0
    xmm: bytes = bytes(256)
    mxcsr: int = 0x1F80

    def to_raw(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class CpuidEntry:
    """``struct kvm_cpuid_entry2``."""

    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int

    def as_tuple(self) -> tuple[int, ...]:
        return astuple(self)
